/* trainrun's command line, --config files and Slurm/mpirun detection:
 * what is accepted, and the message for everything that is not. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "launcher/launcher_impl.h"
#include "tests/harness.h"

#define ARGV(...) ((char *[]){"trainrun", __VA_ARGS__, NULL})
#define ARGC(v) ((int)(sizeof(v) / sizeof(v[0])) - 1)

/* Parses and resolves argv; returns the status, o filled either way. */
static em_status parse(tr_options *o, int argc, char **argv) {
  em_status st = tr_options_parse(o, argc, argv);
  if (st == EM_OK) st = tr_options_resolve(o);
  return st;
}

#define PARSE_OK(o, ...)                                           \
  do {                                                             \
    char **v_ = ARGV(__VA_ARGS__);                                 \
    ASSERT_OK(parse(o, ARGC(ARGV(__VA_ARGS__)), v_));              \
  } while (0)

#define PARSE_ERR(substr, ...)                                                    \
  do {                                                                            \
    tr_options o_;                                                                \
    char **v_ = ARGV(__VA_ARGS__);                                                \
    em_clear_error();                                                             \
    em_status s_ = parse(&o_, ARGC(ARGV(__VA_ARGS__)), v_);                       \
    tr_options_free(&o_);                                                         \
    if (s_ == EM_OK || !strstr(em_last_error(), substr)) {                        \
      EM_FAILF("expected an error containing \"%s\", got %s: \"%s\"", substr,     \
               em_status_name(s_), em_last_error());                              \
      return;                                                                     \
    }                                                                             \
  } while (0)

static void clear_cluster_env(void) {
  const char *vars[] = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_STEPID",
                        "SLURM_NNODES", "SLURM_STEP_NUM_NODES", "SLURM_NODEID", "SLURM_PROCID",
                        "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_NPROCS",
                        "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST", "SLURM_NODELIST",
                        "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

EM_TEST(defaults) {
  clear_cluster_env();
  tr_options o;
  PARSE_OK(&o, "train.py");
  ASSERT_EQ(o.nproc, 1);
  ASSERT_EQ(o.nnodes_min, 1);
  ASSERT_EQ(o.nnodes_max, 1);
  ASSERT_EQ(o.node_rank, 0);
  ASSERT_STREQ(o.rdzv_host, "127.0.0.1");
  ASSERT_EQ(o.rdzv_port, 0); /* a free port */
  ASSERT_EQ(o.max_restarts, 0);
  ASSERT_TRUE(o.signals & (1u << SIGINT));
  ASSERT_TRUE(o.signals & (1u << SIGUSR2));
  ASSERT_EQ(o.nprog, 1);
  ASSERT_STREQ(o.prog[0], "train.py");
  ASSERT_TRUE(o.run_id && strlen(o.run_id) == 16);
  tr_options_free(&o);
}

EM_TEST(torchrun_spellings) {
  clear_cluster_env();
  tr_options o;
  PARSE_OK(&o, "--nproc_per_node=3", "--nnodes", "2:4", "--node_rank", "1", "--rdzv_endpoint",
           "head:1234", "--rdzv-id", "job7", "--max_restarts=2", "--monitor-interval", "0.5",
           "--rdzv-backend", "c10d", "--start-method", "spawn", "-t", "0:3,1:1", "-r2",
           "--log-dir", "/tmp/x", "train.py", "--nproc", "9", "--lr=0.1");
  ASSERT_EQ(o.nproc, 3);
  ASSERT_EQ(o.nnodes_min, 2);
  ASSERT_EQ(o.nnodes_max, 4);
  ASSERT_EQ(o.node_rank, 1);
  ASSERT_STREQ(o.rdzv_host, "head");
  ASSERT_EQ(o.rdzv_port, 1234);
  ASSERT_STREQ(o.run_id, "job7");
  ASSERT_EQ(o.max_restarts, 2);
  ASSERT_CLOSE(o.monitor_interval, 0.5, 0, 0);
  ASSERT_EQ(tr_streamspec_mask(&o.tee, 0, -1), 3);
  ASSERT_EQ(tr_streamspec_mask(&o.tee, 1, -1), 1);
  ASSERT_EQ(tr_streamspec_mask(&o.tee, 5, -1), 0);
  ASSERT_EQ(tr_streamspec_mask(&o.redirects, 7, -1), 2);
  /* everything after the program is the program's */
  ASSERT_EQ(o.nprog, 4);
  ASSERT_STREQ(o.prog[1], "--nproc");
  ASSERT_STREQ(o.prog[2], "9");
  ASSERT_STREQ(o.prog[3], "--lr=0.1");
  tr_options_free(&o);
}

EM_TEST(endpoints_and_more) {
  clear_cluster_env();
  tr_options o;
  PARSE_OK(&o, "--nnodes", "2", "--rdzv", "[::1]:5000", "-m", "pkg.train");
  ASSERT_STREQ(o.rdzv_host, "::1");
  ASSERT_EQ(o.rdzv_port, 5000);
  ASSERT_EQ(o.node_rank, -1);
  ASSERT_TRUE(o.module);
  ASSERT_STREQ(o.run_id, "none");
  tr_options_free(&o);
  PARSE_OK(&o, "--nnodes", "2", "--rdzv", "head", "x");
  ASSERT_EQ(o.rdzv_port, TR_DEFAULT_RDZV_PORT);
  tr_options_free(&o);
  PARSE_OK(&o, "--nnodes", "2", "--master-addr", "10.0.0.1", "x");
  ASSERT_STREQ(o.rdzv_host, "10.0.0.1");
  ASSERT_EQ(o.rdzv_port, TR_DEFAULT_PORT);
  tr_options_free(&o);
  PARSE_OK(&o, "--standalone", "--nproc", "auto", "--signals", "INT,sigterm,10", "--rdzv-conf",
           "join_timeout=10,keep_alive_interval=0.5,keep_alive_max_attempt=4", "--grace-period",
           "200ms", "--ranks-filter", "0,2-3", "x");
  ASSERT_TRUE(o.nproc >= 1);
  ASSERT_EQ(o.signals, (1u << SIGINT) | (1u << SIGTERM) | (1u << SIGUSR1));
  ASSERT_CLOSE(o.rdzv_timeout, 10, 0, 0);
  ASSERT_CLOSE(o.monitor_interval, 0.5, 0, 0);
  ASSERT_CLOSE(o.heartbeat_timeout, 2.0, 1e-12, 0);
  ASSERT_CLOSE(o.grace_period, 0.2, 1e-12, 0);
  ASSERT_TRUE(tr_rankset_has(&o.ranks_filter, 0));
  ASSERT_TRUE(!tr_rankset_has(&o.ranks_filter, 1));
  ASSERT_TRUE(tr_rankset_has(&o.ranks_filter, 3));
  ASSERT_TRUE(!tr_rankset_has(&o.ranks_filter, 4));
  tr_options_free(&o);
  PARSE_OK(&o, "--signals", "none", "--", "--weird-name");
  ASSERT_EQ(o.signals, 0);
  ASSERT_STREQ(o.prog[0], "--weird-name");
  tr_options_free(&o);
  PARSE_OK(&o, "--help");
  ASSERT_TRUE(o.help);
  tr_options_free(&o);
}

EM_TEST(bad_options) {
  clear_cluster_env();
  PARSE_ERR("unknown option '--nprocs' (did you mean --nproc?)", "--nprocs", "2", "x");
  PARSE_ERR("unknown option '--max-restart' (did you mean --max-restarts?)", "--max-restart=2",
            "x");
  PARSE_ERR("unknown option '-x'", "-x", "y");
  PARSE_ERR("--nproc: '0' is not a number of workers", "--nproc", "0", "x");
  PARSE_ERR("--nproc: 'abc' is not a number of workers", "--nproc", "abc", "x");
  PARSE_ERR("--nproc needs a value", "--nproc");
  PARSE_ERR("--nnodes: '3:2': MIN 3 is larger than MAX 2", "--nnodes", "3:2", "x");
  PARSE_ERR("--nnodes: 'two' is not N or MIN:MAX", "--nnodes", "two", "x");
  PARSE_ERR("--rdzv-timeout: '-1' is not a duration", "--rdzv-timeout", "-1", "x");
  PARSE_ERR("--grace-period: '5x' is not a duration", "--grace-period", "5x", "x");
  PARSE_ERR("--max-restarts: 'many' is not a number", "--max-restarts", "many", "x");
  PARSE_ERR("--tee: '5' is not a stream choice", "--tee", "5", "x");
  PARSE_ERR("--signals: 'SIGKILL' is not a signal trainrun forwards", "--signals", "SIGKILL",
            "x");
  PARSE_ERR("--ranks-filter: '3-1' is not a rank or a range", "--ranks-filter", "3-1", "x");
  PARSE_ERR("--rdzv: 'h:99999': port '99999' is not a number", "--rdzv", "h:99999", "x");
  PARSE_ERR("--rdzv-backend: 'etcd' is not supported", "--rdzv-backend", "etcd", "x");
  PARSE_ERR("--rdzv-conf: unknown key 'bogus'", "--rdzv-conf", "bogus=1", "x");
  PARSE_ERR("--standalone: 'maybe' is not true or false", "--standalone=maybe", "x");
  PARSE_ERR("no program to run", "--nproc", "2");
  PARSE_ERR("-m (--module) and --no-python cannot be combined", "-m", "--no-python", "x");
  PARSE_ERR("--standalone is a one-node job", "--standalone", "--nnodes", "2", "x");
  PARSE_ERR("--standalone picks its own rendezvous endpoint", "--standalone", "--rdzv", "h:1",
            "x");
  PARSE_ERR("--nnodes 2 needs the rendezvous endpoint", "--nnodes", "2", "x");
  PARSE_ERR("--node-rank 2 is out of range for 2 nodes", "--nnodes", "2", "--node-rank", "2",
            "--rdzv", "h:1", "x");
  PARSE_ERR("--node-rank 1 but the job has 1 node", "--node-rank", "1", "x");
  PARSE_ERR("--rdzv names port 1 but --master-port names 2", "--rdzv", "h:1", "--master-port",
            "2", "x");
  PARSE_ERR("--rdzv names host 'a' but --master-addr names 'b'", "--rdzv", "a:1",
            "--master-addr", "b", "x");
  PARSE_ERR("port 0 (any free port) only works for a one-node job", "--nnodes", "2", "--rdzv",
            "h:0", "x");
  PARSE_ERR("--heartbeat-timeout 1 s is shorter than --monitor-interval 2 s",
            "--heartbeat-timeout", "1", "--monitor-interval", "2", "x");
  PARSE_ERR("--config /nonexistent/x.yaml: No such file", "--config", "/nonexistent/x.yaml", "x");
}

/* ---- --config ---- */

static char *write_tmp(const char *text) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/trainrun_cfg_XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) return NULL;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? path : NULL;
}

EM_TEST(config_file) {
  clear_cluster_env();
  char *path = write_tmp(
      "# a comment\n"
      "nproc: 3\n"
      "max_restarts: 2\n"
      "signals: [SIGINT, SIGTERM]\n"
      "rdzv-conf: {join_timeout: 30, last_call_timeout: 4}\n"
      "ranks-filter: [0, 2-3]\n"
      "standalone: true\n"
      "program: train.py\n"
      "args: [--epochs, \"2\"]\n");
  ASSERT_TRUE(path);
  tr_options o;
  PARSE_OK(&o, "--config", path);
  ASSERT_EQ(o.nproc, 3);
  ASSERT_EQ(o.max_restarts, 2);
  ASSERT_EQ(o.signals, (1u << SIGINT) | (1u << SIGTERM));
  ASSERT_CLOSE(o.rdzv_timeout, 30, 0, 0);
  ASSERT_CLOSE(o.last_call, 4, 0, 0);
  ASSERT_TRUE(o.standalone);
  ASSERT_TRUE(tr_rankset_has(&o.ranks_filter, 2) && !tr_rankset_has(&o.ranks_filter, 1));
  ASSERT_EQ(o.nprog, 3);
  ASSERT_STREQ(o.prog[0], "train.py");
  ASSERT_STREQ(o.prog[1], "--epochs");
  ASSERT_STREQ(o.prog[2], "2");
  tr_options_free(&o);
  /* the command line wins, wherever --config stands */
  PARSE_OK(&o, "--nproc", "5", "--config", path, "other.py", "a");
  ASSERT_EQ(o.nproc, 5);
  ASSERT_EQ(o.max_restarts, 2);
  ASSERT_EQ(o.nprog, 2);
  ASSERT_STREQ(o.prog[0], "other.py");
  tr_options_free(&o);
  unlink(path);

  path = write_tmp("module: mypkg.train\nargs: [x]\n");
  ASSERT_TRUE(path);
  PARSE_OK(&o, "--config", path);
  ASSERT_TRUE(o.module);
  ASSERT_STREQ(o.prog[0], "mypkg.train");
  ASSERT_STREQ(o.prog[1], "x");
  tr_options_free(&o);
  unlink(path);
}

EM_TEST(config_errors) {
  clear_cluster_env();
  struct {
    const char *text, *msg;
  } cases[] = {
      {"nproc: 2\nnprocs: 3\n", ":2: unknown option 'nprocs' (did you mean --nproc?)"},
      {"nproc: 2\n\nmax-restarts: lots\n", ":3: --max-restarts: 'lots' is not a number"},
      {"nproc: [1, 2\n", "not valid YAML"},
      {"- nproc\n- 2\n", ":1: expected a mapping of option names"},
      {"nproc: 2\nnproc: 3\n", ":2: 'nproc' is given twice"},
      {"config: other.yaml\n", "a config file cannot name another config file"},
      {"signals: [[SIGINT]]\n", "expected plain values in the list"},
      {"args: [a]\n", "args given without a program"},
      {"program: a\nmodule: b\n", "give either program"},
      {"nproc: 1\n---\nnproc: 2\n", "more than one YAML document"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *path = write_tmp(cases[i].text);
    ASSERT_TRUE(path);
    char p[64];
    snprintf(p, sizeof p, "%s", path);
    PARSE_ERR(cases[i].msg, "--config", p, "x");
    unlink(p);
  }
}

/* Every trainrun config shipped in configs/ parses. */
EM_TEST(shipped_configs) {
  clear_cluster_env();
  DIR *d = opendir(EMBER_TEST_SOURCE_DIR "/configs");
  if (!d) EM_SKIP("no configs/ directory");
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name);
    if (strncmp(e->d_name, "trainrun_", 9) != 0 || len < 5 || strcmp(e->d_name + len - 5, ".yaml"))
      continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/%s", EMBER_TEST_SOURCE_DIR, e->d_name);
    tr_options o;
    char *v[] = {"trainrun", "--config", path, "train.py", NULL};
    em_status st = parse(&o, 4, v);
    tr_options_free(&o);
    if (st != EM_OK) {
      EM_FAILF("%s: %s", path, em_last_error());
      break;
    }
    n++;
  }
  closedir(d);
  ASSERT_TRUE(n >= 4);
}

/* ---- Slurm and mpirun ---- */

static void slurm_env(const char *nnodes, const char *nodeid, const char *procid,
                      const char *ntasks, const char *list) {
  clear_cluster_env();
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_NNODES", nnodes, 1);
  setenv("SLURM_NODEID", nodeid, 1);
  setenv("SLURM_PROCID", procid, 1);
  setenv("SLURM_NTASKS", ntasks, 1);
  setenv("SLURM_JOB_NODELIST", list, 1);
}

EM_TEST(slurm) {
  tr_options o;
  slurm_env("4", "2", "2", "4", "node[01-03,07]");
  PARSE_OK(&o, "--nproc", "8", "train.py");
  ASSERT_STREQ(o.env_source, "slurm");
  ASSERT_EQ(o.nnodes_min, 4);
  ASSERT_EQ(o.nnodes_max, 4);
  ASSERT_EQ(o.node_rank, 2);
  ASSERT_STREQ(o.rdzv_host, "node01");
  ASSERT_EQ(o.rdzv_port, 15000 + 4242);
  ASSERT_STREQ(o.run_id, "4242");
  ASSERT_EQ(o.nslurm_hosts, 4);
  ASSERT_STREQ(o.slurm_hosts[3], "node07");
  tr_options_free(&o);
  /* two tasks on one node: two agents */
  slurm_env("1", "0", "1", "2", "n1");
  PARSE_OK(&o, "--master-port", "1234", "x");
  ASSERT_EQ(o.nnodes_max, 2);
  ASSERT_EQ(o.node_rank, 1);
  ASSERT_STREQ(o.rdzv_host, "n1");
  ASSERT_EQ(o.rdzv_port, 1234);
  tr_options_free(&o);
  /* a batch script (no step): not an srun task, a one-node job */
  slurm_env("4", "0", "0", "4", "n[1-4]");
  unsetenv("SLURM_STEP_ID");
  PARSE_OK(&o, "x");
  ASSERT_EQ(o.nnodes_max, 1);
  ASSERT_TRUE(o.env_source == NULL);
  tr_options_free(&o);
  /* one task: --standalone is fine */
  slurm_env("1", "0", "0", "1", "n1");
  PARSE_OK(&o, "--standalone", "x");
  ASSERT_EQ(o.nnodes_max, 1);
  tr_options_free(&o);
  clear_cluster_env();
}

EM_TEST(slurm_inconsistent) {
  slurm_env("2", "0", "0", "2", "node01");
  PARSE_ERR("inconsistent Slurm setup: SLURM_NNODES=2 but SLURM_JOB_NODELIST='node01' names 1 node",
            "x");
  slurm_env("2", "2", "0", "2", "n[1-2]");
  PARSE_ERR("SLURM_NODEID=2 but the step has 2 nodes", "x");
  slurm_env("2", "1", "2", "2", "n[1-2]");
  PARSE_ERR("SLURM_PROCID=2 but the step has 2 tasks", "x");
  slurm_env("2", "1", "0", "1", "n[1-2]");
  PARSE_ERR("1 task (SLURM_NTASKS) on 2 nodes", "x");
  slurm_env("2", "1", "1", "2", "n[1-");
  PARSE_ERR("Slurm's SLURM_JOB_NODELIST: node list 'n[1-'", "x");
  slurm_env("2", "x", "1", "2", "n[1-2]");
  PARSE_ERR("SLURM_NODEID='x' is not a number", "x");
  slurm_env("2", "1", "1", "2", "n[1-2]");
  PARSE_ERR("--standalone under srun with SLURM_NTASKS=2", "--standalone", "x");
  PARSE_ERR("--nnodes 3 but srun started 2 trainrun tasks", "--nnodes", "3", "x");
  PARSE_ERR("--node-rank 0 but this is Slurm task 1", "--node-rank", "0", "x");
  clear_cluster_env();
}

EM_TEST(mpirun) {
  tr_options o;
  clear_cluster_env();
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  PARSE_ERR("under mpirun with 2 processes trainrun needs --rdzv", "x");
  PARSE_OK(&o, "--rdzv", "h:5", "x");
  ASSERT_EQ(o.nnodes_max, 2);
  ASSERT_EQ(o.node_rank, 1);
  tr_options_free(&o);
  setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  PARSE_ERR("OMPI_COMM_WORLD_RANK=2 but OMPI_COMM_WORLD_SIZE=2", "x");
  clear_cluster_env();
}

EM_TEST(signal_names) {
  ASSERT_EQ(tr_signal_from_name("SIGINT"), SIGINT);
  ASSERT_EQ(tr_signal_from_name("term"), SIGTERM);
  ASSERT_EQ(tr_signal_from_name("10"), SIGUSR1);
  ASSERT_EQ(tr_signal_from_name("SIGKILL"), 0);
  ASSERT_EQ(tr_signal_from_name("9"), 0);
  ASSERT_STREQ(tr_signal_name(SIGSEGV), "SIGSEGV");
}

EM_TEST(durations) {
  double s;
  ASSERT_OK(tr_parse_seconds("t", "1.5", &s));
  ASSERT_CLOSE(s, 1.5, 0, 0);
  ASSERT_OK(tr_parse_seconds("t", "250ms", &s));
  ASSERT_CLOSE(s, 0.25, 1e-12, 0);
  ASSERT_OK(tr_parse_seconds("t", "2m", &s));
  ASSERT_CLOSE(s, 120, 0, 0);
  ASSERT_ERR(tr_parse_seconds("t", "nan", &s), EM_ERR_INVALID, "is not a duration");
  ASSERT_ERR(tr_parse_seconds("t", "", &s), EM_ERR_INVALID, "empty duration");
}

EM_TEST_MAIN()
