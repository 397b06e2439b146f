/* bench_allreduce: allreduce latency and bus bandwidth of ember's process
 * group backends.
 *
 *   bench_allreduce [-b tcp,shm,auto] [-n 2,4] [-s 4096,65536,...] [-t seconds] [-k]
 *
 * For each backend and rank count it forks the ranks (a store hosted by
 * rank 0 on 127.0.0.1), and for each size (bytes of float32, SUM) times
 * back-to-back allreduce + wait: a calibration picks the iteration count
 * so one repetition takes about -t seconds (default 0.15), then the median
 * of 5 repetitions, each started together (a barrier), as seen by rank 0.
 * Bus bandwidth = 2 (n - 1) / n * bytes / time (NCCL's definition), so it
 * compares across rank counts. Results are checked (every element must
 * equal the rank sum).
 *
 * Output: one line per measurement,
 *   RESULT <impl> <ranks> <bytes> <seconds per op> <bus GB/s> <rank 0's CPU seconds per op>
 * (CPU time, user + system over all of rank 0's threads, says how much
 * work an op costs whatever else runs on the machine.)
 * (bench/bench_allreduce.sh merges these with gloo's and MPI's into one
 * table). -k keeps going after a failing backend. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm/process_group.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system, every thread) this process has used. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int parse_list(const char *s, long long *out, int max) {
  int n = 0;
  char *dup = strdup(s), *save = NULL;
  for (char *tok = strtok_r(dup, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
    out[n++] = atoll(tok);
  free(dup);
  return n;
}

static int wait_ok(em_work *w) {
  if (!w) return -1;
  em_status st = em_work_wait(w, EM_PG_DEFAULT_TIMEOUT);
  em_work_release(w);
  return st == EM_OK ? 0 : -1;
}

static int barrier(em_pg *pg) { return wait_ok(em_pg_barrier(pg, NULL)); }

/* One rank's whole run; returns its exit code. */
static int rank_main(int rank, int world, int port, const char *backend, const long long *sizes,
                     int nsizes, double rep_s) {
  em_store_options so = {.timeout_ms = 120000, .secret = ""};
  em_store *s = em_store_tcp_create("127.0.0.1", port, rank == 0, &so);
  if (!s) {
    fprintf(stderr, "rank %d: store: %s\n", rank, em_last_error());
    return 2;
  }
  em_pg_options po = {.backend = backend, .timeout_ms = 120000};
  em_pg *pg = em_pg_init_store(s, rank, world, &po);
  if (!pg) {
    fprintf(stderr, "rank %d: %s: %s\n", rank, backend, em_last_error());
    em_store_release(s);
    return 3;
  }
  int rc = 0;
  for (int k = 0; k < nsizes && !rc; k++) {
    int64_t n = sizes[k] / 4;
    em_tensor *t = em_tensor_ones(1, &n, EM_FLOAT32);
    /* warm up (first touch, socket buffers) and check the result */
    for (int i = 0; i < 3 && !rc; i++) {
      em_tensor_fill_(t, em_scalar_float(rank + 1));
      rc = wait_ok(em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL));
    }
    if (!rc) {
      const float *p = em_tensor_data(t);
      float want = (float)world * (world + 1) / 2;
      for (int64_t i = 0; i < n; i += 1 + n / 97)
        if (p[i] != want) {
          fprintf(stderr, "rank %d: wrong result %g != %g at %lld\n", rank, p[i], want, (long long)i);
          rc = 4;
          break;
        }
    }
    /* calibrate: batches of 1, 2, 4, ... ops until one takes rep_s / 4;
     * every rank uses the slowest rank's time, so all agree */
    double per = 0;
    em_tensor *est = em_tensor_zeros(EM_DIMS(1), EM_FLOAT64);
    for (long batch = 1; !rc; batch *= 2) {
      double t0 = now_s();
      for (long i = 0; i < batch && !rc; i++) rc = wait_ok(em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL));
      *(double *)em_tensor_data(est) = now_s() - t0;
      if (!rc) rc = wait_ok(em_pg_allreduce(pg, est, EM_REDUCE_MAX, NULL));
      double took = *(double *)em_tensor_data(est);
      per = took / (double)batch;
      if (took >= rep_s / 4 || batch >= 65536) break;
    }
    em_tensor_release(est);
    long iters = (long)(rep_s / (per > 1e-9 ? per : 1e-9));
    if (iters < 3) iters = 3;
    if (iters > 200000) iters = 200000;
    double reps[5], cpu0 = cpu_s();
    for (int r = 0; r < 5 && !rc; r++) {
      rc = barrier(pg);
      double a = now_s();
      for (long i = 0; i < iters && !rc; i++)
        rc = wait_ok(em_pg_allreduce(pg, t, EM_REDUCE_SUM, NULL));
      reps[r] = (now_s() - a) / (double)iters;
    }
    double cpu = (cpu_s() - cpu0) / (5.0 * (double)iters);
    if (rc && rc != 4) fprintf(stderr, "rank %d: %s\n", rank, em_last_error());
    if (!rc && rank == 0) {
      qsort(reps, 5, sizeof reps[0], cmp_d);
      double sec = reps[2];
      double bus = 2.0 * (world - 1) / world * (double)sizes[k] / sec / 1e9;
      printf("RESULT ember-%s %d %lld %.9f %.4f %.9f\n", backend, world, sizes[k], sec, bus, cpu);
      fflush(stdout);
    }
    em_tensor_release(t);
  }
  barrier(pg);
  em_pg_release(pg);
  /* rank 0 hosts the store: let the others go first */
  int64_t v = 0;
  em_store_add(s, "bench_done", 1, &v);
  if (rank == 0)
    for (int i = 0; i < 5000 && v < world; i++) {
      usleep(1000);
      if (em_store_add(s, "bench_done", 0, &v)) break;
    }
  em_store_release(s);
  return rc;
}

static int free_port(void) {
  em_store_server_options o = {.secret = ""};
  em_store_server *srv = em_store_server_start("127.0.0.1", 0, &o);
  if (!srv) return -1;
  int p = em_store_server_port(srv);
  em_store_server_destroy(srv);
  return p;
}

int main(int argc, char **argv) {
  const char *backends = "tcp";
  long long ranks[8] = {2, 4}, sizes[16] = {4096, 65536, 1 << 20, 16 << 20, 64 << 20};
  int nranks = 2, nsizes = 5;
  double rep_s = 0.15;
  bool keep_going = false;
  int opt;
  while ((opt = getopt(argc, argv, "b:n:s:t:kh")) != -1) {
    switch (opt) {
      case 'b': backends = optarg; break;
      case 'n': nranks = parse_list(optarg, ranks, 8); break;
      case 's': nsizes = parse_list(optarg, sizes, 16); break;
      case 't': rep_s = atof(optarg); break;
      case 'k': keep_going = true; break;
      default:
        fprintf(stderr, "usage: %s [-b tcp,shm,auto] [-n 2,4] [-s bytes,...] [-t seconds] [-k]\n",
                argv[0]);
        return opt == 'h' ? 0 : 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  char *dup = strdup(backends), *save = NULL;
  int failed = 0;
  for (char *b = strtok_r(dup, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
    for (int ri = 0; ri < nranks; ri++) {
      int W = (int)ranks[ri];
      int port = free_port();
      pid_t pids[64];
      fflush(stdout);
      for (int r = 0; r < W; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(rank_main(r, W, port, b, sizes, nsizes, rep_s));
      }
      int bad = 0;
      for (int r = 0; r < W; r++) {
        int st = 0;
        if (pids[r] > 0) waitpid(pids[r], &st, 0);
        if (pids[r] <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
      }
      if (bad) {
        fprintf(stderr, "bench_allreduce: backend %s at %d ranks: %d ranks failed\n", b, W, bad);
        failed = 1;
        if (!keep_going) {
          free(dup);
          return 1;
        }
      }
    }
  }
  free(dup);
  return failed;
}
