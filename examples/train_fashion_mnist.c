/* Trains a small CNN on Fashion-MNIST from C.
 *
 *   conv 1->32 3x3, ReLU, max-pool 2, conv 32->64 3x3, ReLU, max-pool 2,
 *   Linear 1600->128, ReLU, Linear 128->10; SGD with momentum, batch 64.
 *
 * Reads the gzip IDX files Debian's dataset-fashion-mnist package installs
 * (/usr/share/datasets/fashion-mnist), prints a progress line every couple
 * of seconds and the test accuracy after each epoch, and saves a
 * safetensors checkpoint (model and optimizer) after each epoch; --resume
 * continues from it.
 *
 * The learning rate follows a cosine schedule from --lr down to 0 over the
 * whole run (stepped every batch; --constant-lr turns it off).
 *
 *   train_fashion_mnist [--epochs 5] [--lr 0.05] [--momentum 0.9]
 *                       [--batch 64] [--threads N] [--data DIR]
 *                       [--checkpoint FILE] [--resume] [--seed S]
 *                       [--constant-lr]
 *                       [--limit N]  (use only the first N training images)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dataloader/dataloader.h"
#include "nn/nn.h"

typedef struct options {
  int epochs;
  double lr, momentum;
  int64_t batch;
  int threads;
  const char *data;
  const char *checkpoint;
  bool resume, constant_lr;
  uint64_t seed;
  int64_t limit;
} options;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHECK(x)                                                           \
  do {                                                                     \
    if (!(x)) {                                                            \
      fprintf(stderr, "train_fashion_mnist: %s\n", em_last_error());       \
      goto fail;                                                           \
    }                                                                      \
  } while (0)
#define CHECK_OK(x) CHECK((x) == EM_OK)

static int usage(const char *msg) {
  if (msg) fprintf(stderr, "train_fashion_mnist: %s\n", msg);
  fprintf(stderr,
          "usage: train_fashion_mnist [--epochs N] [--lr X] [--momentum X] [--batch N]\n"
          "                           [--threads N] [--data DIR] [--checkpoint FILE]\n"
          "                           [--resume] [--seed S] [--constant-lr] [--limit N]\n");
  return 2;
}

static int parse(int argc, char **argv, options *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end = NULL;
#define NUM(field, conv)                                     \
  do {                                                       \
    if (!v) return usage("missing value");                   \
    errno = 0;                                               \
    o->field = conv;                                         \
    if (errno || !end || *end) {                             \
      fprintf(stderr, "train_fashion_mnist: bad value '%s' for %s\n", v, a); \
      return 2;                                              \
    }                                                        \
    i++;                                                     \
  } while (0)
    if (!strcmp(a, "--epochs")) NUM(epochs, (int)strtol(v, &end, 10));
    else if (!strcmp(a, "--lr")) NUM(lr, strtod(v, &end));
    else if (!strcmp(a, "--momentum")) NUM(momentum, strtod(v, &end));
    else if (!strcmp(a, "--batch")) NUM(batch, strtoll(v, &end, 10));
    else if (!strcmp(a, "--threads")) NUM(threads, (int)strtol(v, &end, 10));
    else if (!strcmp(a, "--seed")) NUM(seed, strtoull(v, &end, 10));
    else if (!strcmp(a, "--limit")) NUM(limit, strtoll(v, &end, 10));
    else if (!strcmp(a, "--data") && v) o->data = argv[++i];
    else if (!strcmp(a, "--checkpoint") && v) o->checkpoint = argv[++i];
    else if (!strcmp(a, "--resume")) o->resume = true;
    else if (!strcmp(a, "--constant-lr")) o->constant_lr = true;
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(NULL), 1;
    else {
      fprintf(stderr, "train_fashion_mnist: unknown option '%s'\n", a);
      return usage(NULL);
    }
#undef NUM
  }
  if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0) || o->momentum < 0)
    return usage("--epochs and --batch must be >= 1, --lr > 0, --momentum >= 0");
  return 0;
}

/* images uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], normalised with the
 * Fashion-MNIST mean and standard deviation. */
static em_tensor *prepare_images(em_tensor *raw) {
  em_tensor *f = em_tensor_to_dtype(raw, EM_FLOAT32);
  if (!f) return NULL;
  em_tensor *x = em_tensor_view(f, EM_DIMS(raw->shape[0], 1, 28, 28));
  em_tensor_release(f);
  if (!x) return NULL;
  /* (x / 255 - 0.2860) / 0.3530 in one pass */
  em_tensor *y = em_tensor_mul_scalar(x, em_scalar_float(1.0 / (255 * 0.3530)));
  em_tensor_release(x);
  if (!y) return NULL;
  em_tensor *z = em_tensor_sub_scalar(y, em_scalar_float(0.2860 / 0.3530));
  em_tensor_release(y);
  return z;
}

static em_tensor *load(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return em_dl_idx_load(path);
}

static em_module *make_model(void) {
  em_conv_options c = {0};
  em_pool_options p = {.kernel = {2, 2}};
  return em_nn_sequential(10, (em_module *[]){
      em_nn_conv2d(1, 32, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_conv2d(32, 64, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
      em_nn_flatten(1, -1), em_nn_linear(1600, 128, true), em_nn_relu(),
      em_nn_linear(128, 10, true)});
}

/* Accuracy on (x, y) in eval mode, batches of 1000. */
static double evaluate(em_module *model, em_tensor *x, em_tensor *y) {
  em_module_train(model, false);
  bool prev = em_set_grad_enabled(false);
  int64_t n = x->shape[0], correct = 0;
  double acc = -1;
  for (int64_t s = 0; s < n; s += 1000) {
    int64_t len = n - s < 1000 ? n - s : 1000;
    em_tensor *xb = em_tensor_narrow(x, 0, s, len);
    em_tensor *yb = em_tensor_narrow(y, 0, s, len);
    em_tensor *logits = xb ? em_module_forward(model, xb) : NULL;
    em_tensor *pred = logits ? em_tensor_argmax(logits, true, 1, false) : NULL;
    em_tensor *eq = pred ? em_tensor_eq(pred, yb) : NULL;
    em_tensor *cnt = eq ? em_tensor_sum(eq, 0, NULL, false, EM_DTYPE_UNDEFINED) : NULL;
    if (cnt) correct += (int64_t)em_tensor_item_double(cnt);
    bool ok = cnt != NULL;
    em_tensor_release(cnt), em_tensor_release(eq), em_tensor_release(pred);
    em_tensor_release(logits), em_tensor_release(yb), em_tensor_release(xb);
    if (!ok) goto out;
  }
  acc = (double)correct / (double)n;
out:
  em_set_grad_enabled(prev);
  em_module_train(model, true);
  return acc;
}

static em_status save_checkpoint(const char *path, em_module *model, em_optimizer *opt, int epoch) {
  em_state_dict *sd = em_state_dict_create(), *m = em_module_state_dict(model),
                *o = em_optim_state_dict(opt);
  em_status st = (!sd || !m || !o) ? em_last_status() : EM_OK;
  if (!st) st = em_state_dict_merge(sd, m, "model.");
  if (!st) st = em_state_dict_merge(sd, o, "optimizer.");
  char ep[32];
  snprintf(ep, sizeof ep, "%d", epoch);
  const char *keys[] = {"epoch", "format"}, *vals[] = {ep, "pt"};
  if (!st) st = em_save_safetensors(path, sd, 2, keys, vals);
  em_state_dict_free(sd), em_state_dict_free(m), em_state_dict_free(o);
  return st;
}

/* Splits a combined checkpoint back into model and optimizer parts. */
static em_status load_checkpoint(const char *path, em_module *model, em_optimizer *opt, int *epoch) {
  em_state_dict *all = NULL, *m = em_state_dict_create(), *o = em_state_dict_create();
  em_status st = (!m || !o) ? em_last_status() : em_load_safetensors(path, &all);
  for (int i = 0; !st && i < em_state_dict_size(all); i++) {
    const char *name = em_state_dict_name_at(all, i);
    em_tensor *t = em_state_dict_tensor_at(all, i);
    if (!strncmp(name, "model.", 6)) st = em_state_dict_set(m, name + 6, t);
    else if (!strncmp(name, "optimizer.", 10)) st = em_state_dict_set(o, name + 10, t);
  }
  if (!st) st = em_module_load_state_dict(model, m, true);
  if (!st) st = em_optim_load_state_dict(opt, o);
  char *ep = NULL;
  if (!st) st = em_safetensors_metadata(path, "epoch", &ep);
  if (!st) *epoch = ep ? atoi(ep) : 0;
  free(ep);
  em_state_dict_free(all), em_state_dict_free(m), em_state_dict_free(o);
  return st;
}

int main(int argc, char **argv) {
  options o = {.epochs = 5, .lr = 0.05, .momentum = 0.9, .batch = 64, .threads = 0,
               .data = "/usr/share/datasets/fashion-mnist",
               .checkpoint = "fashion_mnist.safetensors", .seed = 0, .limit = 0};
  int rc = parse(argc, argv, &o);
  if (rc) return rc == 1 ? 0 : rc;
  if (o.threads > 0) em_set_num_threads(o.threads);
  em_manual_seed(o.seed);
  printf("%s", em_config_string());

  int status = 1;
  em_tensor *raw_train = NULL, *raw_labels = NULL, *raw_test = NULL, *raw_test_labels = NULL;
  em_tensor *xtrain = NULL, *ytrain = NULL, *xtest = NULL, *ytest = NULL;
  em_module *model = NULL;
  em_optimizer *opt = NULL;
  em_scheduler *sched = NULL;
  em_named_tensors params = {0};

  CHECK(raw_train = load(o.data, "train-images-idx3-ubyte.gz"));
  CHECK(raw_labels = load(o.data, "train-labels-idx1-ubyte.gz"));
  CHECK(raw_test = load(o.data, "t10k-images-idx3-ubyte.gz"));
  CHECK(raw_test_labels = load(o.data, "t10k-labels-idx1-ubyte.gz"));
  if (raw_train->ndim != 3 || raw_train->shape[1] != 28 || raw_train->shape[2] != 28 ||
      raw_labels->ndim != 1 || raw_labels->shape[0] != raw_train->shape[0]) {
    fprintf(stderr, "train_fashion_mnist: %s does not hold 28x28 images with one label each\n",
            o.data);
    goto fail;
  }
  CHECK(xtrain = prepare_images(raw_train));
  CHECK(ytrain = em_tensor_to_dtype(raw_labels, EM_INT64));
  CHECK(xtest = prepare_images(raw_test));
  CHECK(ytest = em_tensor_to_dtype(raw_test_labels, EM_INT64));
  if (o.limit > 0 && o.limit < xtrain->shape[0]) {
    em_tensor *a = em_tensor_narrow(xtrain, 0, 0, o.limit), *b = em_tensor_narrow(ytrain, 0, 0, o.limit);
    CHECK(a && b);
    em_tensor_release(xtrain), em_tensor_release(ytrain);
    xtrain = a;
    ytrain = b;
  }

  CHECK(model = make_model());
  CHECK_OK(em_module_named_parameters(model, &params));
  em_sgd_options sgd = {.lr = o.lr, .momentum = o.momentum};
  CHECK(opt = em_optim_sgd(params.n, params.tensors, &sgd));
  {
    char *r = em_module_repr(model);
    printf("%s\n%lld parameters; %lld training and %lld test images\n", r,
           (long long)em_module_num_parameters(model), (long long)xtrain->shape[0],
           (long long)xtest->shape[0]);
    free(r);
  }

  int start_epoch = 0;
  if (o.resume) {
    if (access(o.checkpoint, F_OK) != 0) {
      fprintf(stderr, "train_fashion_mnist: --resume: no checkpoint at %s\n", o.checkpoint);
      goto fail;
    }
    CHECK_OK(load_checkpoint(o.checkpoint, model, opt, &start_epoch));
    printf("resumed from %s after epoch %d\n", o.checkpoint, start_epoch);
    /* a resumed run continues the data order of a fresh one */
    em_manual_seed(o.seed + (uint64_t)start_epoch * 1000003u);
  }

  const int64_t n = xtrain->shape[0], steps = (n + o.batch - 1) / o.batch;
  if (!o.constant_lr) {
    CHECK(sched = em_sched_cosine_annealing_lr(opt, o.epochs * steps, 0));
    for (int64_t s = 0; s < start_epoch * steps; s++) CHECK_OK(em_sched_step(sched)); /* resume */
  }
  for (int epoch = start_epoch; epoch < o.epochs; epoch++) {
    em_manual_seed(o.seed + (uint64_t)epoch * 1000003u);
    em_tensor *perm = NULL;
    CHECK(perm = em_tensor_randperm(n, EM_INT64, NULL));
    double t0 = now(), last_print = t0, loss_sum = 0;
    int64_t loss_n = 0, seen = 0;
    for (int64_t step = 0; step < steps; step++) {
      int64_t s = step * o.batch, len = n - s < o.batch ? n - s : o.batch;
      em_tensor *idx = em_tensor_narrow(perm, 0, s, len);
      em_tensor *xb = idx ? em_tensor_index_select(xtrain, 0, idx) : NULL;
      em_tensor *yb = xb ? em_tensor_index_select(ytrain, 0, idx) : NULL;
      em_tensor *logits = yb ? em_module_forward(model, xb) : NULL;
      em_tensor *loss = logits ? em_nn_f_cross_entropy(logits, yb, NULL) : NULL;
      em_status st = loss ? em_optim_zero_grad(opt, true) : em_last_status();
      if (!st) st = em_backward(loss, NULL, false);
      if (!st) st = em_optim_step(opt);
      if (!st && sched) st = em_sched_step(sched);
      double l = loss ? em_tensor_item_double(loss) : NAN;
      em_tensor_release(loss), em_tensor_release(logits), em_tensor_release(yb);
      em_tensor_release(xb), em_tensor_release(idx);
      if (st || !loss) {
        fprintf(stderr, "train_fashion_mnist: step %lld: %s\n", (long long)step, em_last_error());
        em_tensor_release(perm);
        goto fail;
      }
      if (!isfinite(l)) {
        fprintf(stderr, "train_fashion_mnist: the loss diverged (%g) at step %lld; try a smaller --lr\n",
                l, (long long)step);
        em_tensor_release(perm);
        goto fail;
      }
      loss_sum += l;
      loss_n++;
      seen += len;
      double t = now();
      if (t - last_print >= 2.0 || step == steps - 1) {
        double rate = seen / (t - t0);
        printf("epoch %d/%d  step %lld/%lld  loss %.4f  lr %.4f  %.0f samples/s  eta %.0fs\n",
               epoch + 1, o.epochs, (long long)step + 1, (long long)steps, loss_sum / loss_n,
               em_optim_get_lr(opt, 0), rate, (n - seen) / rate);
        fflush(stdout);
        last_print = t;
        loss_sum = 0;
        loss_n = 0;
      }
    }
    em_tensor_release(perm);
    double acc = evaluate(model, xtest, ytest);
    CHECK(acc >= 0);
    printf("epoch %d: test accuracy %.2f%% (%.1fs)\n", epoch + 1, 100 * acc, now() - t0);
    fflush(stdout);
    CHECK_OK(save_checkpoint(o.checkpoint, model, opt, epoch + 1));
  }
  status = 0;
fail:
  em_named_tensors_free(&params);
  em_sched_free(sched);
  em_optim_free(opt);
  em_module_release(model);
  em_tensor *all[] = {raw_train, raw_labels, raw_test, raw_test_labels, xtrain, ytrain, xtest, ytest};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) em_tensor_release(all[i]);
  return status;
}
