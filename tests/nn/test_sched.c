/* LR schedulers: each sequence for ~20 steps against the values PyTorch
 * 1.13 produced (hard-coded below: generated once with torch.optim's
 * schedulers on SGD/Adam/RMSprop optimizers; torch is not needed to run
 * this test), plus closed forms computed here, two param groups, the
 * momentum / beta1 cycling of OneCycleLR, SequentialLR and errors. */
#include <math.h>

#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

/* ---- PyTorch 1.13 sequences: lr after construction, then after each step ---- */
static const double STEP_g0[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.00625, 0.00625, 0.00625, 0.003125, 0.003125, 0.003125, 0.0015625, 0.0015625, 0.0015625};
static const double STEP_g1[] = {0.03, 0.03, 0.03, 0.015, 0.015, 0.015, 0.0075, 0.0075, 0.0075, 0.00375, 0.00375, 0.00375, 0.001875, 0.001875, 0.001875, 0.0009375, 0.0009375, 0.0009375, 0.00046875, 0.00046875, 0.00046875};
static const double MULTISTEP[] = {0.1, 0.1, 0.03, 0.03, 0.03, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0026999999999999997, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998, 0.0008099999999999998};
static const double EXPO[] = {0.1, 0.09000000000000001, 0.08100000000000002, 0.07290000000000002, 0.06561000000000002, 0.05904900000000002, 0.05314410000000002, 0.04782969000000002, 0.043046721000000024, 0.03874204890000002, 0.03486784401000002, 0.03138105960900001, 0.028242953648100012, 0.025418658283290013, 0.022876792454961013, 0.020589113209464913, 0.01853020188851842, 0.01667718169966658, 0.015009463529699923, 0.013508517176729932, 0.01215766545905694};
static const double COSINE[] = {0.1, 0.09554359905560886, 0.08305704108364301, 0.06501344202803415, 0.04498655797196586, 0.026942958916356993, 0.014456400944391143, 0.01, 0.01445640094439114, 0.026942958916356986, 0.04498655797196585, 0.06501344202803411, 0.083057041083643, 0.09554359905560887, 0.1, 0.09554359905560889, 0.08305704108364304, 0.06501344202803414, 0.04498655797196587, 0.026942958916357007, 0.01445640094439115, 0.01, 0.01445640094439114, 0.026942958916357132, 0.04498655797196615};
static const double LINEAR[] = {0.025, 0.037500000000000006, 0.05, 0.0625, 0.075, 0.08750000000000001, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
static const double LINEAR_DOWN[] = {0.1, 0.07750000000000001, 0.055000000000000014, 0.03250000000000001, 0.01, 0.01, 0.01, 0.01, 0.01};
static const double ONECYCLE[] = {0.020000000000000018, 0.06583592135001265, 0.18583592135001265, 0.3341640786499874, 0.45416407864998737, 0.5, 0.49373200311754367, 0.47524231600673683, 0.445458088785525, 0.40587282697488153, 0.3584715008956504, 0.30563101096814466, 0.250001, 0.19437098903185537, 0.14153049910434962, 0.09412917302511849, 0.05454391121447502, 0.024759683993263143, 0.006269996882456277, 2e-06};
static const double ONECYCLE_mom[] = {0.95, 0.9404508497187474, 0.9154508497187474, 0.8845491502812526, 0.8595491502812526, 0.85, 0.8512536043909088, 0.854951556604879, 0.8609084258765984, 0.8688255099070633, 0.878305813044122, 0.8888739533021842, 0.8999999999999999, 0.9111260466978157, 0.9216941869558779, 0.9311744900929366, 0.9390915741234015, 0.945048443395121, 0.9487463956090911, 0.95};
static const double ONECYCLE3[] = {0.02, 0.065, 0.11000000000000001, 0.155, 0.2, 0.155, 0.11, 0.065, 0.01999999999999999, 0.0182, 0.0164, 0.0146, 0.012799999999999999, 0.011, 0.0092, 0.0074, 0.005599999999999999, 0.003799999999999998, 0.0019999999999999983, 0.0001999999999999988};
static const double ONECYCLE3_mom[] = {0.95, 0.9249999999999999, 0.8999999999999999, 0.875, 0.85, 0.875, 0.8999999999999999, 0.9249999999999999, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95};
static const double ONECYCLE_RMS[] = {0.0020000000000000018, 0.026000000000000002, 0.05, 0.04752423160067369, 0.04058728269748815, 0.030563101096814465, 0.019437098903185537, 0.00941291730251185, 0.0024759683993263145, 2e-07};
static const double ONECYCLE_RMS_mom[] = {0.95, 0.8999999999999999, 0.85, 0.854951556604879, 0.8688255099070633, 0.8888739533021842, 0.9111260466978157, 0.9311744900929366, 0.945048443395121, 0.95};
static const double SEQ_g0[] = {0.010000000000000002, 0.04, 0.07, 0.1, 0.0962320368593087, 0.0855017856687341, 0.06944282990207196, 0.0505, 0.03155717009792806, 0.0154982143312659, 0.1, 0.08000000000000002, 0.06400000000000002, 0.051200000000000016, 0.04096000000000002, 0.03276800000000001, 0.026214400000000013, 0.02097152000000001, 0.016777216000000008, 0.013421772800000007, 0.010737418240000006};
static const double SEQ_g1[] = {0.002, 0.007999999999999998, 0.013999999999999997, 0.02, 0.019276855558857223, 0.0172175144212722, 0.014135492607468353, 0.010499999999999999, 0.006864507392531647, 0.0037824855787277987, 0.02, 0.016, 0.0128, 0.01024, 0.008192000000000001, 0.0065536000000000014, 0.005242880000000002, 0.004194304000000002, 0.003355443200000002, 0.0026843545600000016, 0.0021474836480000013};
static const double SEQ2[] = {0.1, 0.05, 0.025, 0.0125, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025};

#define N(a) ((int)(sizeof(a) / sizeof(a[0])))

typedef struct fixture {
  em_tensor *p[2];
  em_optimizer *opt;
} fixture;

/* kind 0: SGD momentum 0.9; 1: Adam; 2: RMSprop momentum 0.9; 3: Adagrad.
 * ng groups with lrs lr0, lr1. */
static int setup(fixture *f, int kind, int ng, double lr0, double lr1) {
  for (int i = 0; i < 2; i++) {
    f->p[i] = em_tensor_zeros(EM_DIMS(1), EM_FLOAT32);
    em_tensor_set_requires_grad(f->p[i], true);
  }
  em_sgd_options s0 = {.lr = lr0, .momentum = 0.9}, s1 = {.lr = lr1, .momentum = 0.9};
  em_adam_options a0 = {.lr = lr0}, a1 = {.lr = lr1};
  em_rmsprop_options r0 = {.lr = lr0, .momentum = 0.9}, r1 = {.lr = lr1, .momentum = 0.9};
  em_adagrad_options g0 = {.lr = lr0}, g1 = {.lr = lr1};
  const void *o0 = kind == 0 ? (void *)&s0 : kind == 1 ? (void *)&a0 : kind == 2 ? (void *)&r0 : (void *)&g0;
  const void *o1 = kind == 0 ? (void *)&s1 : kind == 1 ? (void *)&a1 : kind == 2 ? (void *)&r1 : (void *)&g1;
  f->opt = kind == 0   ? em_optim_sgd(1, f->p, o0)
           : kind == 1 ? em_optim_adam(1, f->p, o0)
           : kind == 2 ? em_optim_rmsprop(1, f->p, o0)
                       : em_optim_adagrad(1, f->p, o0);
  if (!f->opt) return 0;
  if (ng == 2 && em_optim_add_param_group(f->opt, 1, f->p + 1, o1)) return 0;
  return 1;
}
static void teardown(fixture *f) {
  em_optim_free(f->opt);
  em_tensor_release(f->p[0]), em_tensor_release(f->p[1]);
}

/* Steps s n - 1 times; lr of group g after each must equal want[]; the
 * scheduler's last lr agrees with the optimizer's. */
static int run_seq(em_scheduler *s, em_optimizer *opt, int g, const double *want, int n,
                   double rtol, const double *mom_want, double (*mom)(em_optimizer *)) {
  if (!s) {
    fprintf(stderr, "  scheduler is NULL: %s\n", em_last_error());
    return 0;
  }
  for (int i = 0; i < n; i++) {
    if (i > 0 && em_sched_step(s)) {
      fprintf(stderr, "  step %d failed: %s\n", i, em_last_error());
      return 0;
    }
    double lr = em_optim_get_lr(opt, g);
    if (!(fabs(lr - want[i]) <= rtol * fabs(want[i])) || em_sched_last_lr(s, g) != lr) {
      fprintf(stderr, "  step %d: lr %.17g expected %.17g (last_lr %.17g)\n", i, lr, want[i],
              em_sched_last_lr(s, g));
      return 0;
    }
    if (mom_want && !(fabs(mom(opt) - mom_want[i]) <= 1e-15)) {
      fprintf(stderr, "  step %d: momentum %.17g expected %.17g\n", i, mom(opt), mom_want[i]);
      return 0;
    }
    if (em_sched_last_epoch(s) != i) {
      fprintf(stderr, "  step %d: last_epoch %lld\n", i, (long long)em_sched_last_epoch(s));
      return 0;
    }
  }
  return 1;
}

/* Reads momentum / beta1 of group 0 back through the state dict. */
static double sd_value(em_optimizer *opt, const char *key, int idx) {
  em_state_dict *sd = em_optim_state_dict(opt);
  em_tensor *t = em_state_dict_get(sd, key);
  double v = t ? em_test_get(t, idx) : NAN;
  em_state_dict_free(sd);
  return v;
}
static double sgd_momentum(em_optimizer *o) { return sd_value(o, "param_groups.0.momentum", 0); }
static double adam_beta1(em_optimizer *o) { return sd_value(o, "param_groups.0.betas", 0); }

#define EXACT 1e-15

EM_TEST(step_lr_two_groups) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 2, 0.1, 0.03));
  em_scheduler *s = em_sched_step_lr(f.opt, 3, 0.5);
  /* closed form, computed here: base * gamma^(e / 3) */
  double want0[21], want1[21];
  for (int e = 0; e < 21; e++) want0[e] = 0.1 * pow(0.5, e / 3), want1[e] = 0.03 * pow(0.5, e / 3);
  for (int e = 0; e < 21; e++) ASSERT_CLOSE(want0[e], STEP_g0[e], 1e-15, 0);
  ASSERT_TRUE(run_seq(s, f.opt, 0, STEP_g0, N(STEP_g0), EXACT, NULL, NULL));
  ASSERT_EQ(em_optim_get_lr(f.opt, 1), STEP_g1[20]);
  for (int e = 0; e < 21; e++) ASSERT_CLOSE(want1[e], STEP_g1[e], 1e-15, 0);
  ASSERT_CLOSE(em_optim_initial_lr(f.opt, 0), 0.1, 0, 0);
  ASSERT_CLOSE(em_optim_initial_lr(f.opt, 1), 0.03, 0, 0);
  ASSERT_TRUE(isnan(em_sched_last_lr(s, 2)));
  em_sched_free(s);
  teardown(&f);
}

EM_TEST(multistep_exponential_linear) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  em_scheduler *s = em_sched_multistep_lr(f.opt, 4, (int64_t[]){9, 2, 5, 5}, 0.3);
  ASSERT_TRUE(run_seq(s, f.opt, 0, MULTISTEP, N(MULTISTEP), EXACT, NULL, NULL));
  for (int e = 0; e < N(MULTISTEP); e++) /* closed form */
    ASSERT_CLOSE(MULTISTEP[e], 0.1 * pow(0.3, (e >= 2) + 2 * (e >= 5) + (e >= 9)), 1e-14, 0);
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  s = em_sched_exponential_lr(f.opt, 0.9);
  ASSERT_TRUE(run_seq(s, f.opt, 0, EXPO, N(EXPO), EXACT, NULL, NULL));
  for (int e = 0; e < N(EXPO); e++) ASSERT_CLOSE(EXPO[e], 0.1 * pow(0.9, e), 1e-14, 0);
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  s = em_sched_linear_lr(f.opt, 0.25, 1.0, 6);
  ASSERT_TRUE(run_seq(s, f.opt, 0, LINEAR, N(LINEAR), EXACT, NULL, NULL));
  for (int e = 0; e < N(LINEAR); e++)
    ASSERT_CLOSE(LINEAR[e], 0.1 * (0.25 + 0.75 * (e < 6 ? e : 6) / 6.0), 1e-14, 0);
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  s = em_sched_linear_lr(f.opt, 1.0, 0.1, 4);
  ASSERT_TRUE(run_seq(s, f.opt, 0, LINEAR_DOWN, N(LINEAR_DOWN), EXACT, NULL, NULL));
  em_sched_free(s);
  teardown(&f);
}

EM_TEST(cosine_annealing_recursive_form) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  em_scheduler *s = em_sched_cosine_annealing_lr(f.opt, 7, 0.01);
  ASSERT_TRUE(run_seq(s, f.opt, 0, COSINE, N(COSINE), EXACT, NULL, NULL));
  /* the recursion follows eta_min + (base - eta_min)(1 + cos(pi e / T)) / 2 */
  for (int e = 0; e < N(COSINE); e++)
    ASSERT_CLOSE(COSINE[e], 0.01 + 0.09 * (1 + cos(M_PI * e / 7)) / 2, 1e-12, 1e-15);
  em_sched_free(s);
  teardown(&f);
}

EM_TEST(one_cycle_lr_and_momentum) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  em_scheduler *s = em_sched_one_cycle_lr(f.opt, 0.5, 20, 0.3, true, 25, 1e4, false);
  ASSERT_TRUE(run_seq(s, f.opt, 0, ONECYCLE, N(ONECYCLE), 1e-15, ONECYCLE_mom, sgd_momentum));
  ASSERT_CLOSE(em_optim_initial_lr(f.opt, 0), 0.02, 1e-15, 0);
  /* hand values: warm-up over 5 steps from max/25 to max, cosine */
  for (int e = 0; e <= 5; e++)
    ASSERT_CLOSE(ONECYCLE[e], 0.5 + (0.02 - 0.5) / 2 * (cos(M_PI * e / 5.0) + 1), 1e-12, 0);
  /* step 20 is allowed (as PyTorch); step 21 is an error that changes nothing */
  ASSERT_OK(em_sched_step(s));
  double lr = em_optim_get_lr(f.opt, 0);
  ASSERT_ERR(em_sched_step(s), EM_ERR_INVALID,
             "Tried to step 22 times. The specified number of total steps is 20");
  ASSERT_EQ(em_sched_last_epoch(s), 20);
  ASSERT_TRUE(em_optim_get_lr(f.opt, 0) == lr);
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 1, 1, 0.1, 0));
  s = em_sched_one_cycle_lr(f.opt, 0.2, 20, 0.25, false, 10, 100, true);
  ASSERT_TRUE(run_seq(s, f.opt, 0, ONECYCLE3, N(ONECYCLE3), 1e-15, ONECYCLE3_mom, adam_beta1));
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 2, 1, 0.1, 0));
  s = em_sched_one_cycle_lr(f.opt, 0.05, 10, 0.3, true, 25, 1e4, false);
  ASSERT_TRUE(run_seq(s, f.opt, 0, ONECYCLE_RMS, N(ONECYCLE_RMS), 1e-15, ONECYCLE_RMS_mom,
                      sgd_momentum));
  em_sched_free(s);
  teardown(&f);

  /* Adagrad: lr only */
  ASSERT_TRUE(setup(&f, 3, 1, 0.1, 0));
  s = em_sched_one_cycle_lr(f.opt, 0.5, 20, 0.3, true, 25, 1e4, false);
  ASSERT_TRUE(run_seq(s, f.opt, 0, ONECYCLE, N(ONECYCLE), 1e-15, NULL, NULL));
  em_sched_free(s);
  teardown(&f);
}

EM_TEST(sequential_lr) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 2, 0.1, 0.02));
  em_scheduler *ch[3] = {em_sched_linear_lr(f.opt, 0.1, 1.0, 3),
                         em_sched_cosine_annealing_lr(f.opt, 8, 0.001),
                         em_sched_exponential_lr(f.opt, 0.8)};
  em_scheduler *s = em_sched_sequential_lr(f.opt, 3, ch, (int64_t[]){3, 10});
  ASSERT_TRUE(run_seq(s, f.opt, 0, SEQ_g0, N(SEQ_g0), 1e-15, NULL, NULL));
  ASSERT_CLOSE(em_optim_get_lr(f.opt, 1), SEQ_g1[N(SEQ_g1) - 1], 1e-15, 0);
  em_sched_free(s);
  teardown(&f);

  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  em_scheduler *c2[3] = {em_sched_exponential_lr(f.opt, 0.5), em_sched_step_lr(f.opt, 2, 0.1),
                         em_sched_multistep_lr(f.opt, 2, (int64_t[]){1, 3}, 0.5)};
  s = em_sched_sequential_lr(f.opt, 3, c2, (int64_t[]){4, 9});
  ASSERT_TRUE(run_seq(s, f.opt, 0, SEQ2, N(SEQ2), 1e-15, NULL, NULL));
  em_sched_free(s);
  teardown(&f);
}

EM_TEST(scheduler_errors) {
  fixture f, g;
  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  ASSERT_TRUE(setup(&g, 0, 1, 0.1, 0));
  ASSERT_NULL_ERR(em_sched_step_lr(f.opt, 0, 0.5), EM_ERR_INVALID, "step_size must be positive");
  ASSERT_NULL_ERR(em_sched_cosine_annealing_lr(f.opt, 0, 0), EM_ERR_INVALID, "T_max");
  ASSERT_NULL_ERR(em_sched_linear_lr(f.opt, 1.5, 1, 3), EM_ERR_INVALID,
                  "Starting multiplicative factor");
  ASSERT_NULL_ERR(em_sched_linear_lr(f.opt, 0.5, -1, 3), EM_ERR_INVALID,
                  "Ending multiplicative factor expected to be between 0 and 1");
  ASSERT_NULL_ERR(em_sched_one_cycle_lr(f.opt, 0.1, 0, 0.3, true, 25, 1e4, false), EM_ERR_INVALID,
                  "Expected positive integer total_steps, but got 0");
  ASSERT_NULL_ERR(em_sched_one_cycle_lr(f.opt, 0.1, 10, 1.5, true, 25, 1e4, false), EM_ERR_INVALID,
                  "Expected float between 0 and 1 pct_start, but got 1.5");
  /* pct_start * total_steps = 1 leaves the first phase empty (PyTorch:
   * ZeroDivisionError); the optimizer keeps its lr and momentum */
  ASSERT_NULL_ERR(em_sched_one_cycle_lr(f.opt, 0.1, 10, 0.1, true, 25, 1e4, false), EM_ERR_INVALID,
                  "division by zero");
  ASSERT_CLOSE(em_optim_get_lr(f.opt, 0), 0.1, 0, 0);
  ASSERT_CLOSE(sgd_momentum(f.opt), 0.9, 0, 0);
  ASSERT_NULL_ERR(em_sched_multistep_lr(NULL, 0, NULL, 0.1), EM_ERR_INVALID, "NULL optimizer");
  /* SequentialLR: a scheduler of another optimizer; the references are
   * stolen even on failure (the sanitizer build checks nothing leaks) */
  em_scheduler *ch[2] = {em_sched_exponential_lr(f.opt, 0.5), em_sched_exponential_lr(g.opt, 0.5)};
  ASSERT_NULL_ERR(em_sched_sequential_lr(f.opt, 2, ch, (int64_t[]){3}), EM_ERR_INVALID,
                  "got schedulers at index 1 to be different than the optimizer passed in");
  em_scheduler *ch2[3] = {em_sched_exponential_lr(f.opt, 0.5), em_sched_exponential_lr(f.opt, 0.5),
                          em_sched_exponential_lr(f.opt, 0.5)};
  ASSERT_NULL_ERR(em_sched_sequential_lr(f.opt, 3, ch2, (int64_t[]){5, 3}), EM_ERR_INVALID,
                  "increasing order");
  /* a param group added after the scheduler */
  em_scheduler *s = em_sched_exponential_lr(f.opt, 0.5);
  em_tensor *q = em_tensor_zeros(EM_DIMS(1), EM_FLOAT32);
  ASSERT_OK(em_optim_add_param_group(f.opt, 1, &q, NULL));
  ASSERT_ERR(em_sched_step(s), EM_ERR_STATE, "the scheduler was made for 1");
  em_sched_free(s);
  em_tensor_release(q);
  teardown(&f);
  teardown(&g);
}

/* A scheduler only scales from initial_lr the first time one is made; a
 * second scheduler keeps it (PyTorch's setdefault). */
EM_TEST(initial_lr_set_once) {
  fixture f;
  ASSERT_TRUE(setup(&f, 0, 1, 0.1, 0));
  em_scheduler *a = em_sched_exponential_lr(f.opt, 0.5);
  ASSERT_OK(em_sched_step(a));
  ASSERT_CLOSE(em_optim_get_lr(f.opt, 0), 0.05, 1e-15, 0);
  em_scheduler *b = em_sched_step_lr(f.opt, 2, 0.1);
  ASSERT_CLOSE(em_optim_initial_lr(f.opt, 0), 0.1, 0, 0);
  ASSERT_OK(em_sched_step(b)); /* epoch 1: unchanged */
  ASSERT_OK(em_sched_step(b)); /* epoch 2: x 0.1 */
  ASSERT_CLOSE(em_optim_get_lr(f.opt, 0), 0.005, 1e-14, 0);
  /* initial_lr appears in the optimizer's state dict once a scheduler set it */
  ASSERT_CLOSE(sd_value(f.opt, "param_groups.0.initial_lr", 0), 0.1, 0, 0);
  em_sched_free(a), em_sched_free(b);
  teardown(&f);
}

EM_TEST_MAIN()
