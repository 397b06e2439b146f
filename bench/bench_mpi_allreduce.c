/* MPI_Allreduce reference for bench/bench_allreduce.sh (compiled by that
 * script with mpicc at run time; not part of the CMake build).
 *
 *   mpirun -np N [--mca btl self,tcp | self,vader] bench_mpi_allreduce LABEL SECONDS BYTES...
 *
 * Same method as bench_allreduce.c: float32 SUM, calibration agreed by
 * every rank (MPI_MAX), median of 5 repetitions of back-to-back calls each
 * started by a barrier, rank 0's clock; prints
 *   RESULT <LABEL> <ranks> <bytes> <seconds per op> <bus GB/s> <rank 0's CPU s per op>
 * (Open MPI busy-polls: its CPU time is about its wall time.) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

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

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, world;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (argc < 4) {
    if (rank == 0) fprintf(stderr, "usage: %s LABEL SECONDS BYTES...\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  const char *label = argv[1];
  double rep_s = atof(argv[2]);
  for (int a = 3; a < argc; a++) {
    long long bytes = atoll(argv[a]);
    int n = (int)(bytes / 4);
    float *in = malloc((size_t)n * 4 + 4), *out = malloc((size_t)n * 4 + 4);
    for (int i = 0; i < n; i++) in[i] = (float)(rank + 1);
    for (int i = 0; i < 3; i++) MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (n > 0 && out[n / 2] != (float)world * (world + 1) / 2) {
      fprintf(stderr, "rank %d: wrong result\n", rank);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double per = 0;
    for (long batch = 1;; batch *= 2) {
      double t0 = MPI_Wtime();
      for (long i = 0; i < batch; i++) MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double took = MPI_Wtime() - t0, mx;
      MPI_Allreduce(&took, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      per = mx / (double)batch;
      if (mx >= rep_s / 4 || batch >= 65536) break;
    }
    long iters = (long)(rep_s / (per > 1e-9 ? per : 1e-9));
    if (iters < 3) iters = 3;
    if (iters > 200000) iters = 200000;
    double reps[5], cpu0 = cpu_s();
    for (int r = 0; r < 5; r++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      for (long i = 0; i < iters; i++) MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      reps[r] = (MPI_Wtime() - t0) / (double)iters;
    }
    double cpu = (cpu_s() - cpu0) / (5.0 * (double)iters);
    if (rank == 0) {
      qsort(reps, 5, sizeof reps[0], cmp_d);
      double bus = 2.0 * (world - 1) / world * (double)bytes / reps[2] / 1e9;
      printf("RESULT %s %d %lld %.9f %.4f %.9f\n", label, world, bytes, reps[2], bus, cpu);
      fflush(stdout);
    }
    free(in);
    free(out);
  }
  MPI_Finalize();
  return 0;
}
