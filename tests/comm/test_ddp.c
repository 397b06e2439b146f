/* DDP: training with DDP on W ranks (per-rank batch B) gives the parameters
 * single-process training gives on the concatenated batch W*B; no_sync
 * accumulation; unused parameters; compression hooks; overlap of the
 * first bucket's allreduce with backward; errors.
 *
 * The parent process hosts the store; each rank is a forked child that
 * trains and writes its final parameters to a safetensors file; the parent
 * trains the single-process reference itself and compares. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comm/ddp.h"
#include "comm/pg_impl.h"
#include "comm/store.h"
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/comm/test_mpirun.h"
#include "tests/harness.h"

#define STEPS 4
#define B 6 /* per-rank batch */

static const char *backend = "tcp";

typedef enum model_kind { MLP, CNN_BN, UNUSED } model_kind;

/* ---- models and data (identical in every process for a given seed) ---------------- */

typedef struct twohead_impl {
  int dummy;
} twohead_impl;

/* UNUSED: a Linear whose output the loss uses, beside one it never does. */
static em_tensor *twohead_forward(em_module *m, int nin, em_tensor *const *in) {
  return em_module_forward(em_module_child(m, "used"), in[0]);
}
static const em_module_ops twohead_ops = {"TwoHead", twohead_forward, NULL, NULL};

static em_module *make_model(model_kind kind, em_dtype dt) {
  em_manual_seed(1234);
  em_module *m;
  if (kind == MLP) {
    m = em_nn_sequential(3, (em_module *[]){em_nn_linear(5, 7, true), em_nn_tanh(), em_nn_linear(7, 3, true)});
  } else if (kind == CNN_BN) {
    em_conv_options c = {0};
    em_pool_options p = {.kernel = {2, 2}};
    m = em_nn_sequential(7, (em_module *[]){em_nn_conv2d(2, 4, 3, 3, &c, true),
                                             em_nn_batch_norm2d(4, 1e-5, 0.1, true, true),
                                             em_nn_relu(), em_nn_max_pool2d(&p),
                                             em_nn_flatten(1, -1), em_nn_linear(4 * 3 * 3, 3, true),
                                             em_nn_sigmoid()});
  } else {
    m = em_module_create(&twohead_ops, NULL);
    em_module_register_module(m, "used", em_nn_linear(5, 3, true));
    em_module_register_module(m, "unused", em_nn_linear(5, 3, true));
  }
  if (m && dt == EM_FLOAT64) { /* convert parameters in place */
    em_named_tensors p;
    em_module_named_parameters(m, &p);
    for (int i = 0; i < p.n; i++) {
      em_tensor *d = em_tensor_to_dtype(p.tensors[i], EM_FLOAT64);
      em_tensor *leaf = em_tensor_detach(d);
      em_module_set_tensor(m, p.names[i], leaf);
      em_tensor_release(leaf), em_tensor_release(d);
    }
    em_named_tensors_free(&p);
  }
  return m;
}

/* Batch of step s for all W ranks: x [W*B, ...], y [W*B, 3]. */
static void make_data(model_kind kind, em_dtype dt, int world, int step, em_tensor **x, em_tensor **y) {
  em_generator *g = em_generator_create(99 + (uint64_t)step);
  int64_t n = (int64_t)world * B;
  *x = kind == CNN_BN ? em_tensor_randn(EM_DIMS(n, 2, 8, 8), dt, g) : em_tensor_randn(EM_DIMS(n, 5), dt, g);
  *y = em_tensor_rand(EM_DIMS(n, 3), dt, g);
  em_generator_destroy(g);
}

static em_tensor *loss_of(em_tensor *out, em_tensor *y) { return em_nn_f_mse_loss(out, y, EM_REDUCTION_MEAN); }

static em_optimizer *make_opt(em_module *m) {
  em_named_tensors p;
  em_module_named_parameters(m, &p);
  em_sgd_options o = {.lr = 0.1, .momentum = 0.9};
  em_optimizer *opt = em_optim_sgd(p.n, p.tensors, &o);
  em_named_tensors_free(&p);
  return opt;
}

/* ---- the ranks ------------------------------------------------------------------------ */

typedef struct scenario {
  model_kind kind;
  em_dtype dt;
  int world;
  bool no_sync_accumulate; /* two micro-batches per step, the first under no_sync */
  bool fp16_hook;
  bool bucket_view;
  bool tiny_buckets;
} scenario;

static em_pg *connect_pg(int rank, int world, int port);

/* Where rank writes its trained state: named after the test process (the
 * parent of forked ranks; EMBER_T_DDP_TAG under mpirun). */
static const char *result_path(int rank, char *buf) {
  const char *tag = getenv("EMBER_T_DDP_TAG");
  snprintf(buf, 256, "/tmp/ember_ddp_%d_rank%d.safetensors", tag ? atoi(tag) : (int)getppid(), rank);
  return buf;
}

static int run_rank(const scenario *sc, int port, int rank) {
  em_pg *pg = connect_pg(rank, sc->world, port);
  if (!pg) return fprintf(stderr, "rank %d: %s\n", rank, em_last_error()), 11;
  em_module *m = make_model(sc->kind, sc->dt);
  if (rank == 1) { /* a different init on rank 1: DDP must broadcast rank 0's */
    em_named_tensors p;
    em_module_named_parameters(m, &p);
    bool prev = em_set_grad_enabled(false);
    for (int i = 0; i < p.n; i++) em_tensor_fill_(p.tensors[i], em_scalar_float(0.5));
    em_set_grad_enabled(prev);
    em_named_tensors_free(&p);
  }
  em_ddp_options o = {.gradient_as_bucket_view = sc->bucket_view,
                      .find_unused_parameters = sc->kind == UNUSED};
  if (sc->tiny_buckets) o.bucket_cap_bytes = o.first_bucket_cap_bytes = 64;
  em_ddp *d = em_ddp_create(m, pg, &o);
  if (!d) return fprintf(stderr, "rank %d: %s\n", rank, em_last_error()), 12;
  if (sc->fp16_hook) em_ddp_register_comm_hook(d, em_ddp_hook_fp16_compress, NULL, NULL);
  em_optimizer *opt = make_opt(m);
  int rc = 0;
  for (int step = 0; step < STEPS && !rc; step++) {
    em_tensor *x, *y;
    make_data(sc->kind, sc->dt, sc->world, step, &x, &y);
    em_tensor *xr = em_tensor_narrow(x, 0, rank * B, B), *yr = em_tensor_narrow(y, 0, rank * B, B);
    em_optim_zero_grad(opt, true);
    int micro = sc->no_sync_accumulate ? 2 : 1;
    for (int k = 0; k < micro && !rc; k++) {
      /* micro-batch k: half of the rank's batch each */
      em_tensor *xm = micro == 1 ? em_tensor_retain(xr) : em_tensor_narrow(xr, 0, k * (B / 2), B / 2);
      em_tensor *ym = micro == 1 ? em_tensor_retain(yr) : em_tensor_narrow(yr, 0, k * (B / 2), B / 2);
      bool prev = em_ddp_set_no_sync(d, micro == 2 && k == 0);
      em_tensor *out = em_ddp_forward(d, 1, &xm);
      em_tensor *loss = out ? loss_of(out, ym) : NULL;
      /* accumulate the mean over the whole rank batch */
      em_tensor *scaled = loss ? em_tensor_div_scalar(loss, em_scalar_int(micro)) : NULL;
      if (!scaled || em_backward(scaled, NULL, false)) {
        fprintf(stderr, "rank %d step %d: %s\n", rank, step, em_last_error());
        rc = 13;
      }
      em_ddp_set_no_sync(d, prev);
      em_tensor_release(scaled), em_tensor_release(loss), em_tensor_release(out);
      em_tensor_release(xm), em_tensor_release(ym);
    }
    if (!rc && em_optim_step(opt)) rc = 14;
    em_tensor_release(xr), em_tensor_release(yr), em_tensor_release(x), em_tensor_release(y);
  }
  if (!rc) {
    em_state_dict *sd = em_module_state_dict(m);
    char path[256];
    if (em_save_safetensors(result_path(rank, path), sd, 0, NULL, NULL)) rc = 15;
    em_state_dict_free(sd);
  }
  em_optim_free(opt);
  em_ddp_free(d);
  em_module_release(m);
  em_pg_release(pg);
  return rc;
}

/* ---- the single-process reference -------------------------------------------------------- */

/* The same training on the concatenated batch: the loss of each rank's
 * chunk averaged over ranks (BatchNorm normalises each chunk with its own
 * statistics, as on the ranks; running statistics follow rank 0's chunk,
 * as DDP broadcasts rank 0's buffers each forward). */
static em_module *reference(const scenario *sc) {
  em_module *m = make_model(sc->kind, sc->dt);
  em_optimizer *opt = make_opt(m);
  for (int step = 0; step < STEPS; step++) {
    em_tensor *x, *y;
    make_data(sc->kind, sc->dt, sc->world, step, &x, &y);
    em_optim_zero_grad(opt, true);
    for (int r = 0; r < sc->world; r++) {
      /* ranks other than 0 must not move the running statistics */
      em_named_tensors bufs = {0};
      em_tensor **saved = NULL;
      if (r > 0) {
        em_module_named_buffers(m, &bufs);
        saved = calloc((size_t)bufs.n + 1, sizeof *saved);
        for (int i = 0; i < bufs.n; i++) saved[i] = em_tensor_clone(bufs.tensors[i]);
      }
      em_tensor *xr = em_tensor_narrow(x, 0, r * B, B), *yr = em_tensor_narrow(y, 0, r * B, B);
      em_tensor *out = em_module_forward(m, xr);
      em_tensor *loss = loss_of(out, yr);
      em_tensor *scaled = em_tensor_div_scalar(loss, em_scalar_int(sc->world));
      em_backward(scaled, NULL, false);
      bool prev = em_set_grad_enabled(false);
      for (int i = 0; i < bufs.n; i++) {
        em_tensor_copy_(bufs.tensors[i], saved[i]);
        em_tensor_release(saved[i]);
      }
      em_set_grad_enabled(prev);
      free(saved);
      em_named_tensors_free(&bufs);
      em_tensor_release(scaled), em_tensor_release(loss), em_tensor_release(out);
      em_tensor_release(xr), em_tensor_release(yr);
    }
    em_optim_step(opt);
    em_tensor_release(x), em_tensor_release(y);
  }
  em_optim_free(opt);
  return m;
}

/* Forks a store process and world children running fn(rank, port, arg)
 * against it; returns 1 when every child exits 0. The test process itself
 * starts no thread: a child forked while another thread of the parent
 * holds a lock (the allocator's under ASan) would inherit it held. */
typedef int (*rank_fn)(int rank, int port, const void *arg);
static int run_mpi(int world, rank_fn fn, const void *arg);

static int run_children(int world, int (*fn)(int rank, int port, const void *arg), const void *arg) {
  if (!strcmp(backend, "mpi")) return run_mpi(world, fn, arg);
  int fds[2];
  if (pipe(fds) != 0) {
    EM_FAILF("pipe: %s", strerror(errno));
    return 0;
  }
  pid_t server = fork();
  if (server == 0) {
    close(fds[0]);
    alarm(90);
    em_store_server_options so = {0};
    em_store_server *srv = em_store_server_start("127.0.0.1", 0, &so);
    int port = srv ? em_store_server_port(srv) : -1;
    if (!srv) fprintf(stderr, "store server: %s\n", em_last_error());
    ssize_t n = write(fds[1], &port, sizeof port);
    close(fds[1]);
    if (!srv || n != (ssize_t)sizeof port) _exit(1);
    pause(); /* until the parent is done with it */
    _exit(0);
  }
  close(fds[1]);
  int port = -1;
  ssize_t n = server > 0 ? read(fds[0], &port, sizeof port) : -1;
  close(fds[0]);
  if (n != (ssize_t)sizeof port || port <= 0) {
    EM_FAILF("the store process did not start");
    if (server > 0) kill(server, SIGKILL), waitpid(server, NULL, 0);
    return 0;
  }
  pid_t pids[8];
  for (int r = 0; r < world; r++) {
    pids[r] = fork();
    if (pids[r] == 0) {
      alarm(60);
      _exit(fn(r, port, arg));
    }
  }
  int ok = 1;
  for (int r = 0; r < world; r++) {
    int status;
    waitpid(pids[r], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      EM_FAILF("rank %d failed (%s %d)", r, WIFEXITED(status) ? "exit status" : "signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      ok = 0;
    }
  }
  kill(server, SIGTERM);
  waitpid(server, NULL, 0);
  return ok;
}

static em_pg *connect_pg(int rank, int world, int port) {
  if (!strcmp(backend, "mpi")) { /* under mpirun: ranks from OMPI_COMM_WORLD_*, no store */
    em_pg_options po = {.backend = "mpi", .timeout_ms = 20000};
    em_pg *pg = em_pg_init_env(&po);
    if (pg && (em_pg_rank(pg) != rank || em_pg_size(pg) != world)) {
      fprintf(stderr, "mpi: rank %d of %d, expected %d of %d\n", em_pg_rank(pg), em_pg_size(pg),
              rank, world);
      em_pg_release(pg);
      return NULL;
    }
    return pg;
  }
  em_store_options so = {.timeout_ms = 20000, .secret = ""};
  em_store *store = em_store_tcp_connect("127.0.0.1", port, &so);
  if (!store) return NULL;
  em_pg_options po = {.backend = backend, .timeout_ms = 20000};
  em_pg *pg = em_pg_init_store(store, rank, world, &po);
  em_store_release(store);
  return pg;
}

static int scenario_rank(int rank, int port, const void *arg) {
  return run_rank(arg, port, rank);
}

/* Whether a dotted name is a buffer of m. */
static bool is_buffer(em_module *m, const char *name) {
  em_named_tensors b;
  if (em_module_named_buffers(m, &b)) return false;
  bool found = false;
  for (int i = 0; i < b.n && !found; i++) found = strcmp(b.names[i], name) == 0;
  em_named_tensors_free(&b);
  return found;
}

/* Runs a scenario: returns 1 when every rank matches the reference. */
static int run_scenario(const scenario *sc, double rtol, double atol) {
  if (!run_children(sc->world, scenario_rank, sc)) return 0;
  em_module *ref = reference(sc);
  em_state_dict *want = em_module_state_dict(ref);
  int ok = 1;
  for (int r = 0; r < sc->world && ok; r++) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/ember_ddp_%d_rank%d.safetensors", (int)getpid(), r);
    em_state_dict *got;
    if (em_load_safetensors(path, &got)) {
      EM_FAILF("rank %d result: %s", r, em_last_error());
      ok = 0;
      break;
    }
    unlink(path);
    for (int i = 0; i < em_state_dict_size(want) && ok; i++) {
      const char *name = em_state_dict_name_at(want, i);
      /* buffers (BatchNorm statistics) follow rank 0's data: DDP broadcasts
       * rank 0's at the start of each forward, then every rank's own
       * forward updates its copy — so only rank 0's end state is defined */
      if (r > 0 && is_buffer(ref, name)) continue;
      em_tensor *w = em_state_dict_tensor_at(want, i), *g = em_state_dict_get(got, name);
      if (!g || g->numel != w->numel) {
        EM_FAILF("rank %d: %s missing or resized", r, name);
        ok = 0;
        break;
      }
      double worst = 0;
      for (int64_t e = 0; e < w->numel; e++) {
        double a = em_test_get(g, e), b = em_test_get(w, e);
        double diff = fabs(a - b);
        if (diff > worst) worst = diff;
        if (!(diff <= atol + rtol * fabs(b))) {
          EM_FAILF("rank %d: %s[%lld] = %.9g, single-process %.9g (max diff so far %.3g)", r,
                   name, (long long)e, a, b, worst);
          ok = 0;
          break;
        }
      }
    }
    em_state_dict_free(got);
  }
  em_state_dict_free(want);
  em_module_release(ref);
  return ok;
}

/* Tolerances: float64 models agree to round-off (1e-9); float32 to 1e-4
 * relative (different summation orders over STEPS steps); fp16 compression
 * loses ~3 decimal digits per step (2e-2). */
#define EQUIV(name, ...)                                  \
  EM_TEST(name) {                                          \
    scenario sc = {__VA_ARGS__};                           \
    bool f64 = sc.dt == EM_FLOAT64;                        \
    double rtol = sc.fp16_hook ? 2e-2 : f64 ? 1e-9 : 1e-4; \
    double atol = sc.fp16_hook ? 2e-3 : f64 ? 1e-12 : 1e-5; \
    ASSERT_TRUE(run_scenario(&sc, rtol, atol));            \
  }

EQUIV(mlp_2_ranks, .kind = MLP, .dt = EM_FLOAT64, .world = 2)
EQUIV(mlp_3_ranks_small_buckets, .kind = MLP, .dt = EM_FLOAT64, .world = 3, .tiny_buckets = true)
EQUIV(mlp_bucket_views, .kind = MLP, .dt = EM_FLOAT64, .world = 2, .bucket_view = true, .tiny_buckets = true)
EQUIV(cnn_batchnorm_2_ranks, .kind = CNN_BN, .dt = EM_FLOAT32, .world = 2)
EQUIV(cnn_batchnorm_3_ranks, .kind = CNN_BN, .dt = EM_FLOAT32, .world = 3)
EQUIV(no_sync_accumulation, .kind = MLP, .dt = EM_FLOAT64, .world = 2, .no_sync_accumulate = true)
EQUIV(unused_parameters_do_not_hang, .kind = UNUSED, .dt = EM_FLOAT64, .world = 2)
EQUIV(fp16_compression_hook, .kind = MLP, .dt = EM_FLOAT32, .world = 2, .fp16_hook = true)

/* ---- overlap: the first bucket's allreduce starts before backward ends ----------- */

typedef struct overlap_state {
  em_tensor *first_weight; /* the first layer's weight: its grad comes last */
  int launches;
  bool first_launch_before_first_layer_grad;
} overlap_state;

static em_work *recording_hook(void *state, em_pg *pg, em_ddp_bucket *bucket) {
  overlap_state *o = state;
  if (o->launches++ == 0) {
    em_tensor *g = em_tensor_grad(o->first_weight);
    o->first_launch_before_first_layer_grad = g == NULL && em_ag_in_backward();
    em_tensor_release(g);
  }
  return em_ddp_hook_allreduce(NULL, pg, bucket);
}

static int overlap_rank(int rank, int port, const void *arg) {
  em_pg *pg = connect_pg(rank, 2, port);
  if (!pg) return 11;
  em_module *m = make_model(MLP, EM_FLOAT32);
  em_ddp_options o = {.bucket_cap_bytes = 64, .first_bucket_cap_bytes = 64};
  em_ddp *d = em_ddp_create(m, pg, &o);
  if (!d) return 12;
  overlap_state st = {.first_weight = em_module_parameter(em_module_child(m, "0"), "weight")};
  em_ddp_register_comm_hook(d, recording_hook, &st, NULL);
  em_tensor *x, *y;
  make_data(MLP, EM_FLOAT32, 2, 0, &x, &y);
  em_tensor *out = em_ddp_forward(d, 1, &x);
  em_tensor *loss = loss_of(out, y);
  int rc = em_backward(loss, NULL, false) ? 13 : 0;
  em_ddp_stats stats = em_ddp_get_stats(d);
  if (!rc && !st.first_launch_before_first_layer_grad) rc = 14;
  if (!rc && (stats.nbuckets < 2 || stats.launched_during_backward < 1 || stats.iterations != 1)) rc = 15;
  em_tensor_release(loss), em_tensor_release(out), em_tensor_release(x), em_tensor_release(y);
  em_ddp_free(d);
  em_module_release(m);
  em_pg_release(pg);
  return rc;
}

EM_TEST(first_bucket_allreduce_overlaps_backward) { ASSERT_TRUE(run_children(2, overlap_rank, NULL)); }

/* ---- errors ---------------------------------------------------------------------- */

static int mismatch_rank(int rank, int port, const void *arg) {
  em_pg *pg = connect_pg(rank, 2, port);
  if (!pg) return 11;
  em_module *m = rank == 0 ? em_nn_linear(4, 3, true) : em_nn_linear(5, 3, true);
  em_ddp *d = em_ddp_create(m, pg, NULL);
  int rc = 0;
  if (d) rc = 20;
  else if (!strstr(em_last_error(), "parameter 0 is \"weight [3, 4] float32\" on rank 0 but \"weight [3, 5] float32\" on rank 1") &&
           !strstr(em_last_error(), "parameter 0 is \"weight [3, 5] float32\" on rank 1 but \"weight [3, 4] float32\" on rank 0")) {
    fprintf(stderr, "rank %d: unexpected message: %s\n", rank, em_last_error());
    rc = 21;
  }
  em_ddp_free(d);
  em_module_release(m);
  em_pg_release(pg);
  return rc;
}

EM_TEST(parameter_mismatch_names_the_parameter_and_ranks) {
  ASSERT_TRUE(run_children(2, mismatch_rank, NULL));
}

static int pending_rank(int rank, int port, const void *arg) {
  em_pg *pg = connect_pg(rank, 2, port);
  if (!pg) return 11;
  em_module *m = make_model(UNUSED, EM_FLOAT32); /* without find_unused_parameters */
  em_ddp *d = em_ddp_create(m, pg, NULL);
  if (!d) return 12;
  em_tensor *x, *y;
  make_data(UNUSED, EM_FLOAT32, 2, 0, &x, &y);
  int rc = 0;
  em_tensor *out = em_ddp_forward(d, 1, &x);
  em_tensor *loss = loss_of(out, y);
  if (em_backward(loss, NULL, false)) rc = 13; /* completes: the unused bucket just stays pending */
  em_tensor *again = em_ddp_forward(d, 1, &x);
  if (!rc && again) rc = 14;
  if (!rc && (!strstr(em_last_error(), "expected to have finished reduction") ||
              !strstr(em_last_error(), "unused.weight, unused.bias"))) {
    fprintf(stderr, "rank %d: unexpected message: %s\n", rank, em_last_error());
    rc = 15;
  }
  em_tensor_release(again), em_tensor_release(loss), em_tensor_release(out);
  em_tensor_release(x), em_tensor_release(y);
  em_ddp_free(d);
  em_module_release(m);
  em_pg_release(pg);
  return rc;
}

EM_TEST(unfinished_reduction_names_the_parameters) { ASSERT_TRUE(run_children(2, pending_rank, NULL)); }

/* ---- the mpi backend: the ranks are mpirun's processes -------------------------------- */

/* What a rank runs, by index on the mpirun command line. */
static const rank_fn rank_fns[] = {scenario_rank, overlap_rank, mismatch_rank, pending_rank};

/* Runs fn on world ranks started by mpirun (this binary with --mpi-child
 * <fn index> <the scenario, hex>); returns 1 when every rank exits 0. */
static int run_mpi(int world, rank_fn fn, const void *arg) {
  int idx = -1;
  for (int i = 0; i < (int)(sizeof rank_fns / sizeof rank_fns[0]); i++)
    if (rank_fns[i] == fn) idx = i;
  if (idx < 0) {
    EM_FAILF("run_mpi: unknown rank function");
    return 0;
  }
  char idxs[16], hex[2 * sizeof(scenario) + 1] = "-", tag[64];
  snprintf(idxs, sizeof idxs, "%d", idx);
  if (fn == scenario_rank)
    for (size_t i = 0; i < sizeof(scenario); i++)
      snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)arg)[i]);
  snprintf(tag, sizeof tag, "EMBER_T_DDP_TAG=%d", (int)getpid());
  char *args[] = {"backend=mpi", "--mpi-child", idxs, hex, NULL}, *env[] = {tag, NULL};
  int rc = mr_run(world, args, env, 120000);
  if (rc != 0) EM_FAILF("mpirun -np %d: exit status %d", world, rc);
  return rc == 0;
}

static int mpi_child(const char *idxs, const char *hex) {
  const char *r = getenv("OMPI_COMM_WORLD_RANK");
  int idx = atoi(idxs);
  if (!r || idx < 0 || idx >= (int)(sizeof rank_fns / sizeof rank_fns[0])) return 2;
  scenario sc;
  const void *arg = NULL;
  if (strlen(hex) == 2 * sizeof sc) {
    for (size_t i = 0; i < sizeof sc; i++) {
      unsigned v;
      if (sscanf(hex + 2 * i, "%2x", &v) != 1) return 2;
      ((unsigned char *)&sc)[i] = (unsigned char)v;
    }
    arg = &sc;
  }
  alarm(60);
  return rank_fns[idx](atoi(r), 0, arg);
}

/* argv[1] may be "backend=<name>" (tcp, shm, auto, mpi); the rest filters
 * tests. With mpi the scenarios run under mpirun (77: no mpirun or no mpi
 * backend). */
int main(int argc, char **argv) {
  if (argc > 1 && strncmp(argv[1], "backend=", 8) == 0) {
    backend = argv[1] + 8;
    argv[1] = argv[0];
    argc--;
    argv++;
  }
  if (argc == 4 && !strcmp(argv[1], "--mpi-child")) return mpi_child(argv[2], argv[3]);
  if (!strcmp(backend, "mpi")) {
    char mpirun[PATH_MAX];
    if (!mr_find_in_path("mpirun", mpirun, sizeof mpirun)) {
      printf("skipped: mpirun is not on PATH\n");
      return 77;
    }
    em_clear_error();
    if (!em__pg_backend_find("mpi")) {
      printf("skipped: the mpi backend is not built: %s\n", em_last_error());
      return 77;
    }
  }
  return em_test_main(argc, argv);
}
