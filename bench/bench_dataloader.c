/* Data-loading throughput: samples/s over one epoch of the Fashion-MNIST
 * training set (60,000 images) with per-sample augmentation — random crop
 * with padding 4 (pad 28x28 to 36x36 with zeros, take a random 28x28
 * window), random horizontal flip, conversion to float32 normalised as
 * (x/255 - mean)/std — batch 64, shuffle, at num_workers 0, 1 and 2, for
 * ember's DataLoader next to torch.utils.data.DataLoader (PyTorch 1.13,
 * bench/bench_dataloader_torch.py run with /usr/bin/python3) doing the
 * same work in the same run; plus the memory and CPU time of the main
 * process and its workers.
 *
 *   build/bench/bench_dataloader [--epochs N] [--torch-epochs N] [--workers 0,1,2]
 *                                [--root DIR] [--prefetch N] [--no-torch] [--fork-baseline]
 *
 * The ember side is a C map-style dataset whose get callback augments one
 * sample (one randint draw from the worker's default generator, which the
 * loader seeds base_seed + worker id, gives the crop offsets and the flip)
 * and returns (image float32 [1, 28, 28], label int64, index int64);
 * default_collate stacks them straight into the worker's shared-memory
 * slot. The torch side is a Dataset whose __getitem__ does what
 * torchvision's RandomCrop(28, padding=4), RandomHorizontalFlip(),
 * ConvertImageDtype(float) and Normalize do to a uint8 tensor, and returns
 * (image, label, index). Both loaders: batch_size 64, shuffle, default
 * prefetch_factor (2; --prefetch changes ember's), non-persistent workers.
 *
 * Every epoch is checked, on both sides, so the benchmark cannot cheat:
 * every index 0..59999 arrives exactly once (the index field) and the
 * label field matches the label file; on the ember side the first and
 * last batch of every epoch are also checked pixel by pixel: each image
 * must be exactly one of the 162 crop/flip variants of the sample it
 * names, and the variants must vary.
 *
 * Time: median over N epochs (ember 15, torch 1 by default: torch's epochs
 * are 40x longer) of the wall time of one epoch, from creating the
 * iterator (which forks the workers) to the end of the pass (workers
 * reaped). The ember configurations run their epochs interleaved (epoch
 * 1 at 0, 1 and 2 workers, then epoch 2 of each, ...), so a machine that
 * drifts during the run does not favour whichever configuration ran
 * first. Nothing but the loader and the per-batch index/label check runs
 * in a timed ember epoch: the memory probes (below) run in one more,
 * untimed epoch per configuration before the timed ones, and the pixel
 * checks look at copies of the two batches after the clock has stopped.
 * Subtracting a probe's time from a timed epoch instead would flatter the
 * workers: a probe takes 0.4-1.7 ms, the time of 3 to 12 batches, and the
 * workers go on filling their rings meanwhile, work that then costs no
 * time (up to 2% of an epoch per worker at prefetch_factor 2). The torch side
 * keeps its probes in its timed epoch and subtracts their time: there a
 * probe is under 1% of the 128 batches between two probes.
 *
 * Memory, both sides alike, two figures per configuration:
 *   peak      sum of VmHWM (peak resident set) from /proc/<pid>/status of
 *             the main process and of every live worker, read every 128
 *             batches and at the last one (ember: in its memory epoch),
 *             the largest sum seen (ember's workers leave while the last
 *             batches are consumed, so the last batch alone would miss
 *             them); the main process's peak is reset before the epoch
 *             (echo 5 > /proc/self/clear_refs). Pages shared between processes (the
 *             dataset and everything else inherited copy-on-write by fork,
 *             libraries, the batch rings) count once per process mapping
 *             them, so this sum grows by about the main process's size
 *             with every worker even when nothing is copied.
 *   PSS       sum of Pss_Anon + Pss_Shmem (/proc/<pid>/smaps_rollup: every
 *             shared page divided among the processes that map it;
 *             file-backed pages — library code, shared with unrelated
 *             processes — left out), sampled every 128 batches and at the
 *             last one; the largest sum seen. The memory the process tree
 *             really owns: what a worker adds shows here.
 * CPU: user + system time per sample of the main process (RUSAGE_SELF)
 * and of the workers (RUSAGE_CHILDREN: the loaders reap their workers at
 * the end of each pass) in the timed epochs (torch: less its probes).
 * Unlike samples/s it hardly depends on what else the machine runs.
 *
 * Targets (issue 7): ember >= 5x torch's samples/s at every worker count;
 * more ember workers never slower than fewer; ember's memory not growing
 * with workers beyond the rings (PSS per extra worker within its ring of
 * prefetch_factor + 1 = 3 slots plus PROC_MB for the process itself).
 * Misses are marked MISS. A last line gives, per pair of worker counts,
 * the median over rounds of the ratio of their two epochs in that round.
 * The load average is printed with the table:
 * samples/s on a busy machine measure the scheduler as much as the code.
 *
 * --fork-baseline adds to every round one more 0-worker epoch, run in a
 * fork()ed child of the benchmark (timed by the child from iter() to the
 * end of the pass, so without the fork and the exit), and prints per round
 * its speed over 0 workers here and 1 worker's over it. It separates what
 * a process of its own costs on the machine from what the loader's worker
 * adds (fork, start, hand-over, exit): on the 2-vCPU VMs this was written
 * on, the same loop ran 0-6% slower in the child. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dataloader/dataloader.h"

#define IMG 28
#define PAD 4
#define NPOS (2 * PAD + 1) /* crop offsets 0..8 per axis */
#define BATCH 64
#define MEAN 0.2860
#define STD 0.3530
#define MAXW 8
/* A worker's ring: prefetch_factor + 1 = 3 slots, each sized from the
 * first batch + 25% (a 4 KiB header; 64 x (3136 + 8 + 8) bytes of
 * tensors and their 3 descriptors of 272 bytes). */
#define RING_MB (3 * 1.25 * (4096 + 64 * (3136 + 8 + 8) + 3 * 272) / 1048576.0)
/* What a forked worker itself may add: its stack, its private heap pages
 * (copy-on-write copies of the pages it writes), page tables, libc. */
#define PROC_MB 3.0

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static _Noreturn void die(const char *what) {
  fprintf(stderr, "bench_dataloader: %s: %s\n", what, em_last_error());
  exit(1);
}

/* ---- the dataset -------------------------------------------------------------- */

typedef struct fm {
  em_tensor *images, *labels; /* uint8 [N, 28, 28], uint8 [N] */
  const uint8_t *img, *lab;
  int64_t n;
  float lut[256]; /* (v/255 - mean)/std */
} fm;

static int64_t fm_len(void *ctx) { return ((fm *)ctx)->n; }

/* Image i padded by 4 on every side, cropped at (top oy, left ox), flipped
 * horizontally if flip: out[y][x] = padded[y + oy][(flip ? 27 - x : x) + ox]. */
static void augment(const fm *d, int64_t i, int ox, int oy, int flip, float *out) {
  const uint8_t *src = d->img + i * IMG * IMG;
  const float zero = d->lut[0];
  for (int y = 0; y < IMG; y++) {
    float *o = out + y * IMG;
    int sy = y + oy - PAD;
    if (sy < 0 || sy >= IMG) {
      for (int x = 0; x < IMG; x++) o[x] = zero;
      continue;
    }
    const uint8_t *row = src + sy * IMG;
    for (int x = 0; x < IMG; x++) {
      int sx = (flip ? IMG - 1 - x : x) + ox - PAD;
      o[x] = sx >= 0 && sx < IMG ? d->lut[row[sx]] : zero;
    }
  }
}

static em_status fm_get(void *ctx, int64_t i, em_dl_sample *out) {
  fm *d = ctx;
  /* One draw from the worker's generator: (left, top, flip). */
  em_tensor *r = em_tensor_randint(0, NPOS * NPOS * 2, 0, NULL, EM_INT64, NULL);
  if (!r) return em_last_status();
  int64_t v = *(const int64_t *)em_tensor_data(r);
  em_tensor_release(r);
  em_tensor *x = em_tensor_empty(EM_DIMS(1, IMG, IMG), EM_FLOAT32);
  if (!x) return em_last_status();
  augment(d, i, (int)(v % NPOS), (int)(v / NPOS % NPOS), (int)(v / (NPOS * NPOS)),
          em_tensor_data(x));
  em_status st = em_dl_sample_push(out, x); /* releases what it cannot take */
  if (!st) st = em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(d->lab[i]), EM_INT64));
  if (!st) st = em_dl_sample_push(out, em_tensor_scalar(em_scalar_int(i), EM_INT64));
  return st; /* em_dl_dataset_get releases the sample on failure */
}

/* root/name, or root/name.gz when the plain file is missing. */
static em_tensor *load_idx(const char *root, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, name);
  if (access(path, R_OK) != 0) snprintf(path, sizeof path, "%s/%s.gz", root, name);
  em_tensor *t = em_dl_idx_load(path);
  if (!t) die(path);
  return t;
}

/* ---- memory ------------------------------------------------------------------------- */

/* A "Key:   123 kB" field of /proc/<pid>/<file> in kB; 0 if unreadable. */
static long proc_kb(pid_t pid, const char *file, const char *key) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long kb = 0;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, kl) && line[kl] == ':') {
      kb = atol(line + kl + 1);
      break;
    }
  fclose(f);
  return kb;
}

static void reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) {
    fputs("5", f);
    fclose(f);
  }
}

/* Sum over self and the iterator's workers of VmHWM (hwm) or of
 * Pss_Anon + Pss_Shmem. */
static double tree_mb(em_dl_iter *it, bool hwm) {
  pid_t pids[MAXW + 1];
  pids[0] = getpid();
  int n = 1 + em_dl_iter_worker_pids(it, pids + 1, MAXW);
  long kb = 0;
  for (int i = 0; i < n; i++) {
    if (hwm) {
      kb += proc_kb(pids[i], "status", "VmHWM");
      continue;
    }
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pids[i]);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f))
      if (!strncmp(line, "Pss_Anon:", 9) || !strncmp(line, "Pss_Shmem:", 10))
        kb += atol(strchr(line, ':') + 1);
    fclose(f);
  }
  return kb / 1024.0;
}

/* ---- checks -------------------------------------------------------------------------- */

static int64_t check_fail;

static void fail(const char *fmt, int64_t a, int64_t b) {
  if (check_fail++ < 10) {
    fprintf(stderr, "bench_dataloader: CHECK FAILED: ");
    fprintf(stderr, fmt, (long long)a, (long long)b);
    fputc('\n', stderr);
  }
}

/* Each of the n images img (copied from a batch, idx the samples they
 * name) must be one crop/flip variant of its sample; marks the variants
 * seen in used[]. */
static void check_pixels(const fm *d, const float *img, const int64_t *idx, int64_t n, bool *used) {
  float want[IMG * IMG];
  for (int64_t s = 0; s < n; s++) {
    const float *got = img + s * IMG * IMG;
    int found = -1;
    for (int v = 0; v < NPOS * NPOS * 2 && found < 0; v++) {
      augment(d, idx[s], v % NPOS, v / NPOS % NPOS, v / (NPOS * NPOS), want);
      if (!memcmp(want, got, sizeof want)) found = v;
    }
    if (found < 0) fail("sample %lld (checked image %lld) is no crop/flip of its image", idx[s], s);
    else used[found] = true;
  }
}

/* Checks a batch's shapes, indices (seen[] holds the epoch stamp) and
 * labels; returns its size. */
static int64_t check_batch(const fm *d, const em_dl_batch *b, int *seen, int stamp) {
  if (b->n != 3 || em_tensor_ndim(b->t[0]) != 4 || em_tensor_dtype(b->t[0]) != EM_FLOAT32 ||
      em_tensor_shape(b->t[0])[1] != 1 || em_tensor_shape(b->t[0])[2] != IMG ||
      em_tensor_dtype(b->t[2]) != EM_INT64 || !em_tensor_is_contiguous(b->t[0])) {
    fail("batch %lld has the wrong layout (%lld fields)", b->index, b->n);
    return 0;
  }
  int64_t n = em_tensor_shape(b->t[0])[0];
  const int64_t *idx = em_tensor_data(b->t[2]), *lab = em_tensor_data(b->t[1]);
  for (int64_t s = 0; s < n; s++) {
    int64_t i = idx[s];
    if (i < 0 || i >= d->n) {
      fail("index %lld out of range in batch %lld", i, b->index);
      continue;
    }
    if (seen[i] == stamp) fail("index %lld seen twice in one epoch (batch %lld)", i, b->index);
    seen[i] = stamp;
    if (lab[s] != d->lab[i]) fail("label of index %lld wrong (batch %lld)", i, b->index);
  }
  return n;
}

/* ---- one configuration -------------------------------------------------------------------- */

typedef struct result {
  double sps, hwm_mb, pss_mb;
  double cpu_main, cpu_work; /* CPU time (user + system) per sample in us */
} result;

/* User + system seconds of this process (RUSAGE_SELF, all threads) or of
 * its reaped children (RUSAGE_CHILDREN: the workers, which the loader
 * reaps when the pass ends). */
static double cpu_s(int who) {
  struct rusage a;
  getrusage(who, &a);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec) * 1e-6;
}

/* One ember configuration (a worker count) and what its epochs measured.
 * Epochs of the configurations are interleaved (epoch 1 of each, then
 * epoch 2 of each, ...) so that the machine's drift over the run falls on
 * all of them alike rather than on whichever ran last. */
typedef struct ember_cfg {
  int workers;
  float *first, *last; /* copies of the first and last batch's images */
  int64_t *first_idx, *last_idx;
  int64_t nfirst, nlast;
  em_generator *g;
  em_dl_loader *l;
  int64_t nb;
  int *seen;
  double *t;
  double cpu_main, cpu_work;
  result r;
} ember_cfg;

static void ember_cfg_init(ember_cfg *c, em_dl_dataset *ds, const fm *d, int workers, int epochs,
                           int prefetch) {
  memset(c, 0, sizeof *c);
  c->workers = workers;
  c->g = em_generator_create(1234);
  em_dl_loader_options o;
  em_dl_loader_options_init(&o);
  o.batch_size = BATCH;
  o.shuffle = true;
  o.num_workers = workers;
  o.prefetch_factor = workers ? prefetch : 0;
  o.generator = c->g;
  c->l = em_dl_loader_create(ds, &o);
  if (!c->l) die("DataLoader");
  c->nb = em_dl_loader_len(c->l);
  c->seen = calloc((size_t)d->n, sizeof *c->seen);
  c->t = calloc((size_t)epochs, sizeof *c->t);
  c->first = malloc(2 * BATCH * IMG * IMG * sizeof *c->first);
  c->first_idx = malloc(2 * BATCH * sizeof *c->first_idx);
  if (!c->seen || !c->t || !c->first || !c->first_idx) die("bench memory");
  c->last = c->first + BATCH * IMG * IMG;
  c->last_idx = c->first_idx + BATCH;
}

/* Copies the images and indices of batch b (for the pixel checks after
 * the epoch) into img/idx, which hold BATCH samples; returns its size. */
static int64_t keep_batch(const em_dl_batch *b, float *img, int64_t *idx) {
  int64_t n = em_tensor_shape(b->t[0])[0];
  if (n > BATCH) n = BATCH;
  memcpy(img, em_tensor_data(b->t[0]), (size_t)n * IMG * IMG * sizeof *img);
  memcpy(idx, em_tensor_data(b->t[2]), (size_t)n * sizeof *idx);
  return n;
}

/* One pass of configuration c. probe: the memory epoch (probes every 128
 * batches, not timed); else a timed epoch, stored as epoch e. */
static void ember_epoch(ember_cfg *c, const fm *d, int e, bool probe) {
  bool used[NPOS * NPOS * 2] = {0};
  int64_t got = 0, batches = 0;
  int stamp = probe ? 1 : e + 2;
  result *r = &c->r;
  c->nfirst = c->nlast = 0;
  reset_peak();
  double cm0 = cpu_s(RUSAGE_SELF), cw0 = cpu_s(RUSAGE_CHILDREN);
  double t0 = now();
  em_dl_iter *it = em_dl_loader_iter(c->l);
  if (!it) die("DataLoader iter");
  for (;;) {
    em_dl_batch b;
    bool done;
    if (em_dl_iter_next(it, &b, &done)) die("DataLoader next");
    if (done) break;
    got += check_batch(d, &b, c->seen, stamp);
    if (b.index == 0) c->nfirst = keep_batch(&b, c->first, c->first_idx);
    if (b.index == c->nb - 1) c->nlast = keep_batch(&b, c->last, c->last_idx);
    if (probe && (b.index % 128 == 0 || b.index == c->nb - 1)) {
      double pss = tree_mb(it, false), hwm = tree_mb(it, true);
      if (pss > r->pss_mb) r->pss_mb = pss;
      if (hwm > r->hwm_mb) r->hwm_mb = hwm;
    }
    batches++;
    em_dl_batch_release(&b);
  }
  em_dl_iter_destroy(it);
  if (!probe) {
    c->t[e] = now() - t0;
    c->cpu_main += cpu_s(RUSAGE_SELF) - cm0;
    c->cpu_work += cpu_s(RUSAGE_CHILDREN) - cw0;
  }
  if (got != d->n || batches != c->nb) fail("epoch got %lld samples in %lld batches", got, batches);
  check_pixels(d, c->first, c->first_idx, c->nfirst, used);
  check_pixels(d, c->last, c->last_idx, c->nlast, used);
  int nused = 0;
  for (int v = 0; v < NPOS * NPOS * 2; v++) nused += used[v];
  if (nused < 20) fail("only %lld of 162 crop/flip variants in %lld checked images", nused,
                       c->nfirst + c->nlast);
}

/* Timed epoch e of configuration c (0 workers) run in a fork()ed child of
 * this process, which reports its time and its failed checks over a pipe:
 * the --fork-baseline (see main). */
static void ember_epoch_in_child(ember_cfg *c, const fm *d, int e) {
  int fd[2];
  if (pipe(fd) != 0) die("pipe");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(fd[0]);
    ember_epoch(c, d, e, false);
    double msg[2] = {c->t[e], (double)check_fail};
    _exit(write(fd[1], msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : 1);
  }
  close(fd[1]);
  double msg[2];
  ssize_t got = read(fd[0], msg, sizeof msg);
  close(fd[0]);
  int st;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) || got != (ssize_t)sizeof msg) {
    fprintf(stderr, "bench_dataloader: the fork baseline's child failed\n");
    exit(1);
  }
  c->t[e] = msg[0];
  check_fail += (int64_t)msg[1];
}

/* Median over the rounds of a.t[e] / b.t[e]; *faster: rounds where >= 1. */
static double paired_median(const ember_cfg *a, const ember_cfg *b, int epochs, int *faster) {
  double *r = malloc((size_t)epochs * sizeof *r);
  if (!r) die("bench memory");
  *faster = 0;
  for (int e = 0; e < epochs; e++) {
    r[e] = a->t[e] / b->t[e];
    *faster += r[e] >= 1;
  }
  qsort(r, (size_t)epochs, sizeof *r, cmp);
  double med = epochs % 2 ? r[epochs / 2] : (r[epochs / 2 - 1] + r[epochs / 2]) / 2;
  free(r);
  return med;
}

static result ember_cfg_finish(ember_cfg *c, const fm *d, int epochs) {
  qsort(c->t, (size_t)epochs, sizeof *c->t, cmp);
  double med = epochs % 2 ? c->t[epochs / 2] : (c->t[epochs / 2 - 1] + c->t[epochs / 2]) / 2;
  result r = c->r;
  r.sps = (double)d->n / med;
  r.cpu_main = c->cpu_main / ((double)d->n * epochs) * 1e6;
  r.cpu_work = c->cpu_work / ((double)d->n * epochs) * 1e6;
  free(c->t);
  free(c->seen);
  free(c->first);
  free(c->first_idx);
  em_dl_loader_destroy(c->l);
  em_generator_destroy(c->g);
  return r;
}

/* ---- the PyTorch side -------------------------------------------------------------------------- */

static result torch_res[MAXW + 1];
static bool torch_ok[MAXW + 1];

static bool run_torch(const char *root, int epochs, const char *wlist) {
  char cmd[8192];
  const char *dir = getenv("EMBER_SOURCE_DIR") ? getenv("EMBER_SOURCE_DIR") : EMBER_SOURCE_DIR;
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_dataloader_torch.py '%s' %d %s", dir,
           root, epochs, wlist);
  FILE *f = popen(cmd, "r");
  if (!f) return false;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    int w;
    double sps, hwm, pss, cm, cw;
    char ok[16];
    if (sscanf(line, "torch %d %lf %lf %lf %lf %lf %15s", &w, &sps, &hwm, &pss, &cm, &cw, ok) == 7 &&
        w >= 0 && w <= MAXW) {
      torch_res[w] = (result){sps, hwm, pss, cm, cw};
      torch_ok[w] = !strcmp(ok, "ok");
      if (!torch_ok[w]) fprintf(stderr, "bench_dataloader: the torch side failed its check at %d workers\n", w);
      n++;
    } else {
      fputs(line, stderr);
    }
  }
  return pclose(f) == 0 && n > 0;
}

int main(int argc, char **argv) {
  /* ember's epochs are short (~0.15 s) and this machine's speed drifts by
   * +-25% within seconds: a median of 15 interleaved epochs is steady to a
   * few percent, one of 3 was not */
  int epochs = 15, torch_epochs = 1, prefetch = 0;
  bool torch = true, fork_base = false;
  const char *root = getenv("FASHION_MNIST") ? getenv("FASHION_MNIST") : "/usr/share/datasets/fashion-mnist";
  const char *wlist = "0,1,2";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--torch-epochs") && i + 1 < argc) torch_epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--workers") && i + 1 < argc) wlist = argv[++i];
    else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
    else if (!strcmp(argv[i], "--prefetch") && i + 1 < argc) prefetch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-torch")) torch = false;
    else if (!strcmp(argv[i], "--fork-baseline")) fork_base = true;
    else {
      fprintf(stderr, "usage: %s [--epochs N] [--torch-epochs N] [--workers 0,1,2] [--root DIR] "
              "[--prefetch N] [--no-torch] [--fork-baseline]\n", argv[0]);
      return 2;
    }
  }
  if (epochs < 1) epochs = 1;
  if (torch_epochs < 1) torch_epochs = 1;
  int wk[MAXW + 1], nw = 0;
  for (const char *p = wlist; *p && nw <= MAXW;) {
    int w = atoi(p);
    if (w < 0 || w > MAXW) {
      fprintf(stderr, "bench_dataloader: workers must be in 0..%d\n", MAXW);
      return 2;
    }
    wk[nw++] = w;
    p = strchr(p, ',');
    if (!p) break;
    p++;
  }

  fm d = {0};
  d.images = load_idx(root, "train-images-idx3-ubyte");
  d.labels = load_idx(root, "train-labels-idx1-ubyte");
  d.n = em_tensor_shape(d.images)[0];
  if (em_tensor_ndim(d.images) != 3 || em_tensor_shape(d.images)[1] != IMG ||
      em_tensor_dtype(d.images) != EM_UINT8 || em_tensor_numel(d.labels) != d.n) {
    fprintf(stderr, "bench_dataloader: %s does not hold MNIST-shaped training files\n", root);
    return 1;
  }
  d.img = em_tensor_data(d.images);
  d.lab = em_tensor_data(d.labels);
  for (int v = 0; v < 256; v++) d.lut[v] = (float)((v / 255.0 - MEAN) / STD);
  em_dl_dataset_ops ops = {.name = "AugmentedFashionMNIST", .len = fm_len, .get = fm_get};
  em_dl_dataset *ds = em_dl_dataset_create(&ops, &d);
  if (!ds) die("dataset");

  printf("ember %s data-loading benchmark: Fashion-MNIST train (%lld images), random crop "
         "(padding 4) + horizontal flip + normalise, batch %d, shuffle; median of %d epochs "
         "(torch: %d)%s\n", em_version(), (long long)d.n, BATCH, epochs, torch_epochs,
         prefetch ? "; non-default prefetch_factor" : "");
  result er[MAXW + 1];
  ember_cfg cfg[MAXW + 1];
  for (int i = 0; i < nw; i++) ember_cfg_init(&cfg[i], ds, &d, wk[i], epochs, prefetch);
  for (int i = 0; i < nw; i++) ember_epoch(&cfg[i], &d, 0, true);
  ember_cfg fcfg = {0};
  if (fork_base) ember_cfg_init(&fcfg, ds, &d, 0, epochs, 0);
  for (int e = 0; e < epochs; e++) {
    for (int i = 0; i < nw; i++) ember_epoch(&cfg[i], &d, e, false);
    if (fork_base) ember_epoch_in_child(&fcfg, &d, e);
  }
  /* Round by round (one epoch of each configuration back to back), the
   * speed of more workers relative to fewer: unlike a ratio of medians,
   * it cancels the machine's drift between rounds. */
  char paired[MAXW * MAXW * 48] = "";
  for (int i = 0; i < nw; i++)
    for (int j = 0; j < i; j++) {
      if (wk[j] >= wk[i]) continue;
      int faster;
      double med = paired_median(&cfg[j], &cfg[i], epochs, &faster);
      size_t len = strlen(paired);
      snprintf(paired + len, sizeof paired - len, "%s%dw/%dw %.3f (faster in %d of %d)",
               len ? "; " : "", wk[i], wk[j], med, faster, epochs);
    }
  char forked[256] = "";
  if (fork_base) {
    int f0 = -1, f1 = -1, faster;
    for (int i = 0; i < nw; i++) {
      if (wk[i] == 0 && f0 < 0) f0 = i;
      if (wk[i] == 1 && f1 < 0) f1 = i;
    }
    size_t len = 0;
    if (f0 >= 0) {
      double m = paired_median(&cfg[f0], &fcfg, epochs, &faster);
      len = (size_t)snprintf(forked, sizeof forked, "0 workers in a child / 0 workers here %.3f", m);
    }
    if (f1 >= 0) {
      double m = paired_median(&fcfg, &cfg[f1], epochs, &faster);
      snprintf(forked + len, sizeof forked - len, "%s1w / 0 workers in a child %.3f", len ? "; " : "", m);
    }
    ember_cfg_finish(&fcfg, &d, epochs);
  }
  for (int i = 0; i < nw; i++) er[wk[i]] = ember_cfg_finish(&cfg[i], &d, epochs);
  bool have_torch = torch && run_torch(root, torch_epochs, wlist);
  if (torch && !have_torch) printf("(PyTorch reference unavailable: is python3-torch installed?)\n");
  double la[3] = {0};
  if (getloadavg(la, 3) < 0) la[0] = la[1] = la[2] = -1;

  printf("\n%7s %11s %11s %6s %8s %8s %7s %7s %11s %11s  %s\n", "workers", "ember smp/s",
         "torch smp/s", "ratio", "ember MB", "torch MB", "ember", "torch", "ember CPU",
         "torch CPU", "targets");
  printf("%7s %11s %11s %6s %8s %8s %7s %7s %11s %11s\n", "", "", "", "", "(peak)", "(peak)", "PSS MB",
         "PSS MB", "main+work", "main+work");
  bool all = check_fail == 0;
  for (int i = 0; i < nw; i++) {
    int w = wk[i];
    result e = er[w], t = have_torch && torch_ok[w] ? torch_res[w] : (result){0};
    char tg[160] = "", ec[32], tc[32];
    double ratio = t.sps > 0 ? e.sps / t.sps : 0;
    if (t.sps > 0) {
      bool ok = ratio >= 5;
      all &= ok;
      snprintf(tg, sizeof tg, "ratio>=5 %s", ok ? "ok" : "MISS");
    }
    for (int j = 0; j < i; j++)
      if (wk[j] < w) { /* more workers never slower than fewer */
        bool ok = e.sps >= er[wk[j]].sps;
        all &= ok;
        snprintf(tg + strlen(tg), sizeof tg - strlen(tg), "%s>=%dw %s", *tg ? "; " : "", wk[j],
                 ok ? "ok" : "MISS");
      }
    /* Memory: PSS beyond that of the fewest workers run, per extra worker,
     * within its ring plus a small process (RING_MB + PROC_MB). */
    if (i > 0 && w > wk[0]) {
      double extra = (e.pss_mb - er[wk[0]].pss_mb) / (w - wk[0]);
      bool ok = extra <= RING_MB + PROC_MB;
      all &= ok;
      snprintf(tg + strlen(tg), sizeof tg - strlen(tg), "; mem %+.1f MB/worker %s", extra,
               ok ? "ok" : "MISS");
    }
    snprintf(ec, sizeof ec, "%.2f+%.2f", e.cpu_main, e.cpu_work);
    snprintf(tc, sizeof tc, "%.1f+%.1f", t.cpu_main, t.cpu_work);
    printf("%7d %11.0f %11.0f %6.2f %8.1f %8.1f %7.1f %7.1f %11s %11s  %s\n", w, e.sps, t.sps,
           ratio, e.hwm_mb, t.hwm_mb, e.pss_mb, t.pss_mb, ec, t.sps > 0 ? tc : "-", tg);
  }
  printf("\nsmp/s: samples per second, median epoch. MB (peak): sum of peak RSS (VmHWM) of the\n"
         "main process and its workers. PSS MB: largest sum seen of Pss_Anon + Pss_Shmem (data\n"
         "pages split among the processes sharing them). CPU: user + system us per sample in\n"
         "the main process + in the workers. Targets: ratio >= 5; more workers never slower;\n"
         "PSS per extra worker <= its ring (%.2f MB) + %.0f MB.\n", RING_MB, PROC_MB);
  if (*paired) printf("ember, per round, samples/s of more workers over fewer (median): %s\n", paired);
  if (*forked) printf("fork baseline, per round, samples/s (median): %s\n", forked);
  printf("checks (every index once per epoch, labels, pixels of 2 batches per epoch): %s\n",
         check_fail ? "FAILED" : "ok");
  printf("load average: %.2f %.2f %.2f (%ld CPUs); targets %s\n", la[0], la[1], la[2],
         sysconf(_SC_NPROCESSORS_ONLN), all ? "all met" : "MISSED");
  em_dl_dataset_release(ds);
  em_tensor_release(d.images);
  em_tensor_release(d.labels);
  return check_fail ? 1 : 0;
}
