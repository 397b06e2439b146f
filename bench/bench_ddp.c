/* DDP training-step benchmark: the MLP 784-512-512-10 and the
 * Fashion-MNIST CNN, batch 64 per rank, one thread per rank, at 1 and 2
 * ranks, for ember (DDP over the "auto" backend: shared memory on one
 * host) and PyTorch 1.13 DDP on gloo (bench/bench_ddp_torch.py) in the same
 * run. Prints step times, samples/s (all ranks) and scaling efficiency.
 * Targets: ember's 2-rank samples/s >= 1.4x PyTorch's for both models;
 * ember's 2-rank throughput >= 1.8x its own 1-rank on the CNN.
 *
 *   build/bench/bench_ddp [--steps N] [--backend auto|tcp|shm] [--no-torch]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/ddp.h"
#include "comm/store.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static em_module *make(int cnn) {
  em_manual_seed(0);
  if (cnn) {
    em_conv_options c = {0};
    em_pool_options p = {.kernel = {2, 2}};
    return em_nn_sequential(10, (em_module *[]){
        em_nn_conv2d(1, 32, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
        em_nn_conv2d(32, 64, 3, 3, &c, true), em_nn_relu(), em_nn_max_pool2d(&p),
        em_nn_flatten(1, -1), em_nn_linear(1600, 128, true), em_nn_relu(),
        em_nn_linear(128, 10, true)});
  }
  return em_nn_sequential(6, (em_module *[]){em_nn_flatten(1, -1), em_nn_linear(784, 512, true),
                                             em_nn_relu(), em_nn_linear(512, 512, true),
                                             em_nn_relu(), em_nn_linear(512, 10, true)});
}

/* One rank: median step ms written to fd. */
static int rank_main(int rank, int world, int port, int cnn, int steps, const char *backend, int fd) {
  em_set_num_threads(1);
  em_store_options so = {.timeout_ms = 60000, .secret = ""};
  em_store *store = em_store_tcp_connect("127.0.0.1", port, &so);
  if (!store) return 10;
  em_pg_options po = {.backend = backend, .timeout_ms = 60000};
  em_pg *pg = em_pg_init_store(store, rank, world, &po);
  em_store_release(store);
  if (!pg) return fprintf(stderr, "rank %d: %s\n", rank, em_last_error()), 11;
  em_module *m = make(cnn);
  em_ddp *d = em_ddp_create(m, pg, NULL);
  if (!d) return fprintf(stderr, "rank %d: %s\n", rank, em_last_error()), 12;
  em_named_tensors p;
  em_module_named_parameters(m, &p);
  em_sgd_options o = {.lr = 0.01, .momentum = 0.9};
  em_optimizer *opt = em_optim_sgd(p.n, p.tensors, &o);
  em_generator *g = em_generator_create(1 + (uint64_t)rank);
  em_tensor *x = em_tensor_randn(EM_DIMS(64, 1, 28, 28), EM_FLOAT32, g);
  em_tensor *y = em_tensor_randint(0, 10, EM_DIMS(64), EM_INT64, g);
  double *t = malloc(sizeof(double) * (size_t)steps);
  int rc = 0;
  for (int s = -5; s < steps && !rc; s++) {
    double t0 = now();
    em_optim_zero_grad(opt, true);
    em_tensor *out = em_ddp_forward(d, 1, &x);
    em_tensor *loss = out ? em_nn_f_cross_entropy(out, y, NULL) : NULL;
    if (!loss || em_backward(loss, NULL, false) || em_optim_step(opt)) {
      fprintf(stderr, "rank %d: %s\n", rank, em_last_error());
      rc = 13;
    }
    em_tensor_release(loss), em_tensor_release(out);
    if (s >= 0) t[s] = (now() - t0) * 1e3;
  }
  if (!rc) {
    qsort(t, (size_t)steps, sizeof *t, cmp);
    double med = t[steps / 2];
    if (fd >= 0 && write(fd, &med, sizeof med) != sizeof med) rc = 14;
  }
  free(t);
  em_tensor_release(x), em_tensor_release(y);
  em_generator_destroy(g);
  em_optim_free(opt);
  em_named_tensors_free(&p);
  em_ddp_free(d);
  em_module_release(m);
  em_pg_release(pg);
  return rc;
}

/* Median step ms of rank 0 (ranks in lockstep). */
static double run(int world, int cnn, int steps, const char *backend) {
  em_store_server_options so = {0};
  em_store_server *srv = em_store_server_start("127.0.0.1", 0, &so);
  if (!srv) return -1;
  int port = em_store_server_port(srv);
  int fds[2];
  if (pipe(fds)) return -1;
  pid_t pids[8];
  for (int r = 0; r < world; r++) {
    pids[r] = fork();
    if (pids[r] == 0) {
      close(fds[0]);
      _exit(rank_main(r, world, port, cnn, steps, backend, r == 0 ? fds[1] : -1));
    }
  }
  close(fds[1]);
  double ms = -1;
  if (read(fds[0], &ms, sizeof ms) != sizeof ms) ms = -1;
  close(fds[0]);
  for (int r = 0; r < world; r++) {
    int st;
    waitpid(pids[r], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) ms = -1;
  }
  em_store_server_destroy(srv);
  return ms;
}

static double torch_ms[2][2]; /* [cnn][world-1] */
static int run_torch(int steps) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 %s/bench/bench_ddp_torch.py %d",
           EMBER_SOURCE_DIR, steps);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  char model[16];
  int world, n = 0;
  double ms;
  while (fscanf(f, "%15s %d %lf", model, &world, &ms) == 3)
    if (world >= 1 && world <= 2) torch_ms[strcmp(model, "cnn") == 0][world - 1] = ms, n++;
  return pclose(f) == 0 && n == 4 ? 0 : -1;
}

int main(int argc, char **argv) {
  int steps = 20;
  const char *backend = "auto";
  bool torch = true;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
    else if (!strcmp(argv[i], "--no-torch")) torch = false;
  }
  double ms[2][2];
  for (int cnn = 0; cnn < 2; cnn++)
    for (int w = 1; w <= 2; w++) ms[cnn][w - 1] = run(w, cnn, steps, backend);
  bool have_torch = torch && run_torch(steps) == 0;
  printf("DDP training step, batch 64 per rank, 1 thread per rank; ember backend %s\n", backend);
  if (torch && !have_torch) printf("(PyTorch reference unavailable)\n");
  printf("\n%-4s %5s %10s %10s %12s %12s %7s %10s %10s\n", "model", "ranks", "ember ms", "torch ms",
         "ember smp/s", "torch smp/s", "ratio", "ember eff", "torch eff");
  int miss = 0;
  for (int cnn = 0; cnn < 2; cnn++)
    for (int w = 1; w <= 2; w++) {
      double e = ms[cnn][w - 1], t = have_torch ? torch_ms[cnn][w - 1] : 0;
      double es = e > 0 ? w * 64e3 / e : 0, ts = t > 0 ? w * 64e3 / t : 0;
      double eeff = w == 2 && ms[cnn][0] > 0 && e > 0 ? es / (64e3 / ms[cnn][0]) / 2 : 1;
      double teff = w == 2 && t > 0 && torch_ms[cnn][0] > 0 ? ts / (64e3 / torch_ms[cnn][0]) / 2 : 1;
      printf("%-4s %5d %10.2f %10.2f %12.0f %12.0f %7.2f %10.2f %10.2f\n", cnn ? "CNN" : "MLP", w, e,
             t, es, ts, ts > 0 ? es / ts : 0, eeff, have_torch ? teff : 0);
      if (w == 2 && ts > 0 && es / ts < 1.4) miss++;
      if (w == 2 && cnn && eeff * 2 < 1.8) miss++;
    }
  printf("\ntargets: 2-rank ember/torch samples/s >= 1.4 (both models); CNN 2-rank >= 1.8x ember's "
         "1-rank (efficiency >= 0.90): %s\n", miss ? "MISS" : "met");
  return 0;
}
