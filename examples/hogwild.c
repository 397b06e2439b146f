/* Hogwild training on Fashion-MNIST: several processes update one model in
 * shared memory without locks, and reach the accuracy one process reaches
 * in the same total number of steps.
 *
 * The model's parameters are moved into shared memory
 * (em_dl_share_memory_list); fork()ed workers see the same pages, each
 * computes gradients on its own stream of batches and applies SGD updates
 * straight into the shared parameters. The parent then measures test
 * accuracy, and compares with a single process that takes all the steps
 * from the same initial weights.
 *
 *   hogwild [--procs 2] [--steps 6000] [--lr 0.05] [--momentum 0.5] [--batch 64]
 *           [--data DIR] [--tolerance 1.0]
 * Exits 1 if Hogwild's accuracy is more than --tolerance points below the
 * single process's.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dataloader/dataloader.h"
#include "nn/nn.h"

typedef struct opts {
  int procs, steps;
  double lr, momentum, tolerance;
  int64_t batch;
  const char *data;
} opts;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static em_module *make_model(void) {
  em_manual_seed(7);
  return em_nn_sequential(5, (em_module *[]){em_nn_flatten(1, -1), em_nn_linear(784, 128, true),
                                             em_nn_relu(), em_nn_linear(128, 10, true),
                                             em_nn_identity()});
}

static em_tensor *images(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  em_tensor *raw = em_dl_idx_load(path);
  if (!raw) return NULL;
  em_tensor *f = em_tensor_to_dtype(raw, EM_FLOAT32);
  em_tensor_release(raw);
  if (!f) return NULL;
  em_tensor *x = em_tensor_mul_scalar(f, em_scalar_float(1.0 / 255));
  em_tensor_release(f);
  return x;
}

static em_tensor *labels(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  em_tensor *raw = em_dl_idx_load(path);
  if (!raw) return NULL;
  em_tensor *y = em_tensor_to_dtype(raw, EM_INT64);
  em_tensor_release(raw);
  return y;
}

/* steps SGD steps on batches drawn with generator seed. */
static int train(em_module *m, em_tensor *x, em_tensor *y, int steps, const opts *o, uint64_t seed) {
  em_named_tensors p;
  if (em_module_named_parameters(m, &p)) return 1;
  em_sgd_options so = {.lr = o->lr, .momentum = o->momentum};
  em_optimizer *opt = em_optim_sgd(p.n, p.tensors, &so);
  em_generator *g = em_generator_create(seed);
  int rc = opt && g ? 0 : 1;
  int64_t n = x->shape[0];
  for (int s = 0; s < steps && !rc; s++) {
    em_tensor *idx = em_tensor_randint(0, n, EM_DIMS(o->batch), EM_INT64, g);
    em_tensor *xb = idx ? em_tensor_index_select(x, 0, idx) : NULL;
    em_tensor *yb = xb ? em_tensor_index_select(y, 0, idx) : NULL;
    em_tensor *out = yb ? em_module_forward(m, xb) : NULL;
    em_tensor *loss = out ? em_nn_f_cross_entropy(out, yb, NULL) : NULL;
    if (!loss || em_optim_zero_grad(opt, true) || em_backward(loss, NULL, false) ||
        em_optim_step(opt)) {
      fprintf(stderr, "hogwild: step %d: %s\n", s, em_last_error());
      rc = 1;
    }
    em_tensor_release(loss), em_tensor_release(out), em_tensor_release(yb);
    em_tensor_release(xb), em_tensor_release(idx);
  }
  em_generator_destroy(g);
  em_optim_free(opt);
  em_named_tensors_free(&p);
  return rc;
}

static double accuracy(em_module *m, em_tensor *x, em_tensor *y) {
  bool prev = em_set_grad_enabled(false);
  em_tensor *out = em_module_forward(m, x);
  em_tensor *pred = out ? em_tensor_argmax(out, true, 1, false) : NULL;
  em_tensor *eq = pred ? em_tensor_eq(pred, y) : NULL;
  em_tensor *c = eq ? em_tensor_sum(eq, 0, NULL, false, EM_DTYPE_UNDEFINED) : NULL;
  double acc = c ? em_tensor_item_double(c) / (double)y->numel : -1;
  em_tensor_release(c), em_tensor_release(eq), em_tensor_release(pred), em_tensor_release(out);
  em_set_grad_enabled(prev);
  return acc;
}

int main(int argc, char **argv) {
  opts o = {.procs = 2, .steps = 6000, .lr = 0.05, .momentum = 0.5, .batch = 64, .tolerance = 1.0,
            .data = "/usr/share/datasets/fashion-mnist"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v && strcmp(a, "--help")) {
      fprintf(stderr, "hogwild: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "--procs")) o.procs = atoi(argv[++i]);
    else if (!strcmp(a, "--steps")) o.steps = atoi(argv[++i]);
    else if (!strcmp(a, "--lr")) o.lr = atof(argv[++i]);
    else if (!strcmp(a, "--momentum")) o.momentum = atof(argv[++i]);
    else if (!strcmp(a, "--batch")) o.batch = atoll(argv[++i]);
    else if (!strcmp(a, "--tolerance")) o.tolerance = atof(argv[++i]);
    else if (!strcmp(a, "--data")) o.data = argv[++i];
    else {
      fprintf(stderr, "usage: hogwild [--procs N] [--steps N] [--lr X] [--batch N] [--data DIR] [--tolerance P]\n");
      return strcmp(a, "--help") ? 2 : 0;
    }
  }
  if (o.procs < 1 || o.steps < o.procs || o.batch < 1 || !(o.lr > 0)) {
    fprintf(stderr, "hogwild: need --procs >= 1, --steps >= --procs, --batch >= 1, --lr > 0\n");
    return 2;
  }
  em_set_num_threads(1);
  em_tensor *xtr = images(o.data, "train-images-idx3-ubyte.gz");
  em_tensor *ytr = xtr ? labels(o.data, "train-labels-idx1-ubyte.gz") : NULL;
  em_tensor *xte = ytr ? images(o.data, "t10k-images-idx3-ubyte.gz") : NULL;
  em_tensor *yte = xte ? labels(o.data, "t10k-labels-idx1-ubyte.gz") : NULL;
  if (!yte) {
    fprintf(stderr, "hogwild: %s\n", em_last_error());
    return 1;
  }

  /* one process, all the steps */
  double t0 = now();
  em_module *single = make_model();
  if (!single || train(single, xtr, ytr, o.steps, &o, 1000)) return 1;
  double acc1 = accuracy(single, xte, yte);
  printf("single process: %d steps, test accuracy %.2f%% (%.1fs)\n", o.steps, 100 * acc1, now() - t0);
  em_module_release(single);

  /* Hogwild: the same initial weights in shared memory, steps split over procs */
  t0 = now();
  em_module *shared = make_model();
  em_named_tensors p;
  if (!shared || em_module_named_parameters(shared, &p) ||
      em_dl_share_memory_list(p.n, p.tensors)) {
    fprintf(stderr, "hogwild: %s\n", em_last_error());
    return 1;
  }
  em_named_tensors_free(&p);
  pid_t *pids = calloc((size_t)o.procs, sizeof *pids), parent = getpid();
  for (int r = 0; r < o.procs; r++) {
    int share = o.steps / o.procs + (r < o.steps % o.procs);
    pids[r] = fork();
    if (pids[r] < 0) {
      perror("hogwild: fork");
      return 1;
    }
    if (pids[r] == 0) {
      /* a killed parent takes its workers along */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      _exit(train(shared, xtr, ytr, share, &o, 2000 + (uint64_t)r));
    }
  }
  int failed = 0;
  for (int r = 0; r < o.procs; r++) {
    int status;
    waitpid(pids[r], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) failed = 1;
  }
  free(pids);
  if (failed) {
    fprintf(stderr, "hogwild: a worker failed\n");
    return 1;
  }
  double accn = accuracy(shared, xte, yte);
  printf("hogwild, %d processes: %d steps in total, test accuracy %.2f%% (%.1fs)\n", o.procs,
         o.steps, 100 * accn, now() - t0);
  double diff = 100 * (acc1 - accn);
  printf("difference: %.2f points (tolerance %.2f)\n", diff, o.tolerance);
  em_module_release(shared);
  em_tensor *all[] = {xtr, ytr, xte, yte};
  for (int i = 0; i < 4; i++) em_tensor_release(all[i]);
  return diff > o.tolerance ? 1 : 0;
}
