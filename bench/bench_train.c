/* Training-step time of the Fashion-MNIST CNN and of an MLP 784-512-512-10
 * (forward, cross-entropy, backward, SGD step; batch 64) for ember, next to
 * PyTorch 1.13 doing the same in the same run (bench/bench_train_torch.py,
 * run with /usr/bin/python3 at its best setting on this machine:
 * OMP_WAIT_POLICY=PASSIVE). One and two threads; ratio = ember / PyTorch
 * step time (targets: MLP <= 0.8, CNN <= 1.0).
 *
 *   build/bench/bench_train [--steps N] [--no-torch]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static em_module *cnn(void) {
  em_conv_options c = {0};
  em_pool_options p = {.kernel = {2, 2}};
  return em_nn_sequential(10, (em_module *[]){
      em_nn_conv2d(1, 32, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_conv2d(32, 64, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_flatten(1, -1), em_nn_linear(1600, 128, true), em_nn_relu(),
      em_nn_linear(128, 10, true)});
}

static em_module *mlp(void) {
  return em_nn_sequential(6, (em_module *[]){em_nn_flatten(1, -1), em_nn_linear(784, 512, true),
                                             em_nn_relu(), em_nn_linear(512, 512, true),
                                             em_nn_relu(), em_nn_linear(512, 10, true)});
}

/* Median step time in milliseconds over steps (after warm-up). */
static double time_steps(em_module *(*make)(void), int steps) {
  em_manual_seed(0);
  em_module *m = make();
  em_named_tensors p;
  em_module_named_parameters(m, &p);
  em_sgd_options o = {.lr = 0.01, .momentum = 0.9};
  em_optimizer *opt = em_optim_sgd(p.n, p.tensors, &o);
  em_tensor *x = em_tensor_randn(EM_DIMS(64, 1, 28, 28), EM_FLOAT32, NULL);
  em_tensor *y = em_tensor_randint(0, 10, EM_DIMS(64), EM_INT64, NULL);
  double *t = malloc(sizeof(double) * (size_t)steps);
  for (int s = -5; s < steps; s++) {
    double t0 = now();
    em_optim_zero_grad(opt, true);
    em_tensor *out = em_module_forward(m, x);
    em_tensor *loss = out ? em_nn_f_cross_entropy(out, y, NULL) : NULL;
    if (!loss || em_backward(loss, NULL, false) || em_optim_step(opt)) {
      fprintf(stderr, "bench_train: %s\n", em_last_error());
      exit(1);
    }
    em_tensor_release(loss), em_tensor_release(out);
    if (s >= 0) t[s] = (now() - t0) * 1e3;
  }
  qsort(t, (size_t)steps, sizeof *t, cmp);
  double med = t[steps / 2];
  free(t);
  em_tensor_release(x), em_tensor_release(y);
  em_optim_free(opt);
  em_named_tensors_free(&p);
  em_module_release(m);
  return med;
}

/* Runs the PyTorch side: prints "<model> <threads> <ms>" lines. */
static double torch_ms[2][2]; /* [model][threads-1] */
static int run_torch(int steps) {
  char cmd[1024];
  const char *dir = getenv("EMBER_SOURCE_DIR") ? getenv("EMBER_SOURCE_DIR") : EMBER_SOURCE_DIR;
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 %s/bench/bench_train_torch.py %d", dir, steps);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  char model[32];
  int threads;
  double ms;
  int n = 0;
  while (fscanf(f, "%31s %d %lf", model, &threads, &ms) == 3) {
    if (threads < 1 || threads > 2) continue;
    torch_ms[strcmp(model, "cnn") == 0 ? 0 : 1][threads - 1] = ms;
    n++;
  }
  int rc = pclose(f);
  return n == 4 && rc == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  int steps = 30;
  bool torch = true;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-torch")) torch = false;
  }
  printf("ember %s training-step benchmark (batch 64, SGD momentum)\n", em_version());
  printf("BLAS: %s\n", em_blas_info());
  double ember_ms[2][2];
  for (int th = 1; th <= 2; th++) {
    em_set_num_threads(th);
    ember_ms[0][th - 1] = time_steps(cnn, steps);
    ember_ms[1][th - 1] = time_steps(mlp, steps);
  }
  bool have_torch = torch && run_torch(steps) == 0;
  if (torch && !have_torch) printf("(PyTorch reference unavailable: is python3-torch installed?)\n");
  printf("\n%-6s %3s %12s %12s %12s %12s %7s %8s\n", "model", "thr", "ember ms", "torch ms",
         "ember smp/s", "torch smp/s", "ratio", "target");
  const char *names[2] = {"CNN", "MLP"};
  const double target[2] = {1.0, 0.8};
  for (int mdl = 0; mdl < 2; mdl++)
    for (int th = 0; th < 2; th++) {
      double e = ember_ms[mdl][th], t = have_torch ? torch_ms[mdl][th] : 0;
      printf("%-6s %3d %12.2f %12.2f %12.0f %12.0f %7.2f %8s\n", names[mdl], th + 1, e, t,
             64e3 / e, t > 0 ? 64e3 / t : 0, t > 0 ? e / t : 0,
             t > 0 ? (e / t <= target[mdl] ? "ok" : "MISS") : "-");
    }
  return 0;
}
