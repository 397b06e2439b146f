/* trainrun internals, shared by the launcher sources and its tests.
 *
 * trainrun is one agent per node on a libuv loop (agent.c). Its pieces:
 *   options.c  the command line (torchrun-compatible), --help, validation
 *   config.c   --config FILE: the same options from a YAML file (libyaml)
 *   cluster.c  Slurm / mpirun detection, SLURM_JOB_NODELIST expansion,
 *              "is this host the rendezvous host?"
 *   worker.c   spawning workers (own process group, PR_SET_PDEATHSIG),
 *              their environment, the guardian that kills every worker
 *              group if trainrun itself is SIGKILLed
 *   output.c   per-rank "[rank N]: " line prefixing, log files, stderr tails
 *   kv.c       asynchronous store operations for the loop: served directly
 *              by the store server the node-0 agent hosts, or by a blocking
 *              client on helper threads on the other nodes
 *   agent.c    rendezvous, supervision, heartbeats, failure, restarts
 * Not an API: names are tr_ (static functions have no prefix).
 */
#ifndef EMBER_LAUNCHER_IMPL_H
#define EMBER_LAUNCHER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "core/status.h"

/* The interpreter ember was built for and where its package lives; the
 * build passes the real paths. */
#ifndef EMBER_PYTHON_EXECUTABLE
#define EMBER_PYTHON_EXECUTABLE "/usr/bin/python3"
#endif
#ifndef EMBER_PYTHON_BUILD_DIR
#define EMBER_PYTHON_BUILD_DIR ""
#endif
#ifndef EMBER_PYTHON_SOURCE_DIR
#define EMBER_PYTHON_SOURCE_DIR ""
#endif

#define TR_DEFAULT_PORT 29500      /* torchrun's --master-port default */
#define TR_DEFAULT_RDZV_PORT 29400 /* torchrun's c10d --rdzv-endpoint default */
#define TR_MAX_NPROC 4096
#define TR_MAX_NODES 65536
#define TR_TAIL_LINES 10 /* stderr lines shown in a failure summary */

/* Returns a failed em_status from the calling function. */
#define TR_CHECK(call)            \
  do {                            \
    em_status tr_s_ = (call);     \
    if (tr_s_ != EM_OK) return tr_s_; \
  } while (0)

/* Stream bits for --tee / --redirects. */
enum { TR_STDOUT = 1, TR_STDERR = 2 };

/* A set of ranks ("0,2-5"); empty = every rank. */
typedef struct tr_rankset {
  int n;
  int (*ranges)[2]; /* inclusive [lo, hi] pairs, malloc'd */
} tr_rankset;

/* Per-local-rank stream masks ("3" for all, or "0:3,1:1"). */
typedef struct tr_streamspec {
  bool set;
  int all;          /* mask for ranks not in the map; -1 = none given */
  int n;            /* map entries */
  int (*map)[2];    /* {local_rank, mask}, malloc'd */
} tr_streamspec;

typedef struct tr_options {
  /* what to run */
  char **prog;       /* program (script, executable or module) + its args */
  int nprog;
  bool module;       /* -m: prog[0] is a module name */
  bool no_python;    /* --no-python: run prog[0] directly */
  /* the job's shape */
  int nproc;         /* workers on this node */
  int nnodes_min, nnodes_max;
  int node_rank;     /* -1 = assigned at rendezvous */
  bool nnodes_set, node_rank_set;
  char *rdzv_host;   /* rendezvous endpoint (NULL = not given) */
  int rdzv_port;     /* -1 = not given */
  char *rdzv_id;
  char *master_addr; /* NULL = not given */
  int master_port;   /* -1 = not given */
  bool standalone;
  /* supervision */
  int max_restarts;
  double monitor_interval;  /* s: heartbeat period between agents */
  double heartbeat_timeout; /* s: an agent silent this long is lost */
  double rdzv_timeout;      /* s */
  double last_call;         /* s: MIN:MAX grace after MIN nodes joined */
  double grace_period;      /* s: SIGTERM -> SIGKILL */
  uint32_t signals;         /* bit per forwarded signal number */
  /* output */
  char *log_dir;
  tr_streamspec tee, redirects;
  tr_rankset ranks_filter;       /* global ranks shown on the console */
  tr_rankset local_ranks_filter; /* local ranks shown on the console */
  /* flags that end the run early */
  bool help, version;
  /* where the options came from (for messages) */
  char *config_path;
  /* filled by tr_options_resolve */
  char *run_id;
  const char *env_source; /* "slurm", "mpirun" or NULL */
  char **slurm_hosts;     /* the expanded node list under Slurm */
  size_t nslurm_hosts;
} tr_options;

/* ---- options.c ---- */

/* Fills o from argv (argv[0] is the program name): defaults, then the
 * --config file if one is named, then the command line. On error returns
 * EM_ERR_INVALID with a message naming the option and the value ("--nproc:
 * 'x' is not a number ..."). o must be freed with tr_options_free either
 * way. */
em_status tr_options_parse(tr_options *o, int argc, char **argv);

/* Applies one option by its long name (without "--"; '_' and '-' are the
 * same) with a value (NULL for a flag), as if given on the command line.
 * origin prefixes messages ("--config x.yaml:3"); NULL = the command line. */
em_status tr_options_set(tr_options *o, const char *name, const char *value, const char *origin);

/* Fills in what the environment decides (Slurm, mpirun), checks that the
 * options fit together and picks defaults (run id, endpoint). Called once
 * after parsing; reads the process environment. */
em_status tr_options_resolve(tr_options *o);

void tr_options_free(tr_options *o);
/* "2" or "1:4" for messages (a static buffer per thread). */
const char *tr_nnodes_str(const tr_options *o);
void tr_print_help(FILE *f);
void tr_print_version(FILE *f);

/* Duration "1.5", "1.5s", "200ms", "2m", "1h" in seconds. */
em_status tr_parse_seconds(const char *what, const char *s, double *out);
em_status tr_parse_rankset(const char *what, const char *s, tr_rankset *out);
bool tr_rankset_has(const tr_rankset *rs, int rank);
void tr_rankset_free(tr_rankset *rs);
em_status tr_parse_streamspec(const char *what, const char *s, tr_streamspec *out);
int tr_streamspec_mask(const tr_streamspec *ss, int local_rank, int dflt);
void tr_streamspec_free(tr_streamspec *ss);
/* "SIGINT", "INT", "int" or "2" -> 2; 0 if not a signal trainrun forwards. */
int tr_signal_from_name(const char *s);
/* "SIGINT" for 2, "signal 64" for unnamed ones (static buffer for those). */
const char *tr_signal_name(int sig);

/* ---- config.c ---- */

/* Reads a YAML mapping of option names to values (scalars; sequences for
 * list options; `program`, `args`, `module`, `no-python` for what to run)
 * and applies each through tr_options_set. Errors name the file and line. */
em_status tr_config_load(tr_options *o, const char *path);

/* ---- cluster.c ---- */

/* Expands a Slurm host list ("node[01-04,07],gpu[1-2]x[3-4]") into a
 * malloc'd array of malloc'd names (free with tr_hosts_free). */
em_status tr_nodelist_expand(const char *list, char ***hosts, size_t *n);
void tr_hosts_free(char **hosts, size_t n);
/* Slurm/mpirun detection; see tr_options_resolve. */
em_status tr_cluster_detect(tr_options *o);
/* Whether host names an address of this machine (loopback included).
 * *err gets a message when the name does not resolve. */
bool tr_host_is_local(const char *host, char *err, size_t errsize);
/* This machine's short host name. */
const char *tr_hostname(void);

/* ---- output.c ---- */

typedef struct tr_line_tail {
  char *lines[TR_TAIL_LINES];
  int next, count;
} tr_line_tail;

typedef struct tr_stream {
  int fd;          /* read end of the worker's pipe, -1 when closed */
  int which;       /* TR_STDOUT or TR_STDERR */
  int rank;
  bool console;    /* lines go to trainrun's stdout/stderr */
  int logfd;       /* per-rank log file (shared by both streams), -1 = none */
  char *buf;       /* the partial line */
  size_t len, cap;
  tr_line_tail *tail; /* stderr only: the last lines */
} tr_stream;

void tr_stream_init(tr_stream *s, int fd, int which, int rank, bool console, int logfd,
                    tr_line_tail *tail);
/* Reads what the pipe has now (non-blocking) and emits whole lines;
 * returns false at EOF or on a read error (the fd is then closed). */
bool tr_stream_pump(tr_stream *s);
/* Emits the partial last line (if any) followed by a newline, closes the
 * fd and frees the buffer. */
void tr_stream_finish(tr_stream *s);
/* Writes len bytes to fd, all of them, waiting if it is non-blocking. */
void tr_write_all(int fd, const char *p, size_t len);
void tr_tail_free(tr_line_tail *t);

/* trainrun's own messages ("trainrun: ..."), one write per line. */
void tr_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- worker.c ---- */

/* The resolved command every worker runs: path is what to exec, argv
 * what the program sees. */
typedef struct tr_command {
  char *path;
  char **argv;
  int argc;
} tr_command;

/* Builds the command from the options: .py scripts under the build's
 * interpreter, -m modules, executables found on PATH. Errors say what was
 * not found. */
em_status tr_command_build(const tr_options *o, tr_command *cmd);
void tr_command_free(tr_command *cmd);

/* Starts the guardian process (see worker.c): *fd is its command pipe. */
em_status tr_guardian_start(int *fd, pid_t *pid);
void tr_guardian_track(int fd, pid_t pgid, bool add);
void tr_guardian_stop(int fd);

typedef struct tr_spawn {
  const tr_command *cmd;
  char **envp;
  int out_fd, err_fd; /* write ends for the child's stdout/stderr */
} tr_spawn;
/* fork + exec: the child gets its own process group, PR_SET_PDEATHSIG
 * SIGKILL, default signal dispositions, /dev/null as stdin. Returns the
 * pid or -1 with the error set. */
pid_t tr_spawn_worker(const tr_spawn *sp);

/* A NULL-terminated environment: the current one with names replaced. */
typedef struct tr_env {
  char **v;
  int n, cap;
} tr_env;
em_status tr_env_from_current(tr_env *e);
em_status tr_env_clone(tr_env *dst, const tr_env *src);
em_status tr_env_set(tr_env *e, const char *name, const char *value);
const char *tr_env_get(const tr_env *e, const char *name);
void tr_env_free(tr_env *e);

/* ---- kv.c: store operations for the loop ---- */

struct uv_loop_s;
struct em_store_server;
typedef struct tr_kv tr_kv;
typedef struct tr_kvop tr_kvop;

/* SET, GET (no waiting: found says whether the key exists), ADD, WAIT
 * (until the key exists, then its value), SETNX (store the value unless
 * the key exists; out = the value the key holds afterwards: compare_set
 * with an empty expected value). */
typedef enum { TR_KV_SET, TR_KV_GET, TR_KV_ADD, TR_KV_WAIT, TR_KV_SETNX } tr_kv_kind;

/* Called on the loop thread when an operation finished (or was
 * cancelled: st == EM_ERR_INTERRUPTED). The op is freed after it returns. */
typedef void (*tr_kv_cb)(tr_kvop *op);

struct tr_kvop {
  tr_kvop *next;
  tr_kv_kind kind;
  char *key;
  char *val;  /* SET/SETNX: the value to store */
  size_t vlen;
  int64_t arg; /* ADD: delta; WAIT: timeout in ms, -1 = none */
  /* results */
  em_status st;
  char *err;          /* message when st != EM_OK */
  char *out;          /* GET/WAIT/SETNX: the value (NUL-terminated) */
  size_t outlen;
  bool found;         /* GET */
  int64_t num;        /* ADD */
  tr_kv_cb cb;
  void *ctx;
  int tag;       /* the caller's (the agent: the round it was started in) */
  /* internal */
  tr_kv *kv;
  int cancelled; /* atomic */
  bool pending;  /* not yet completed */
  uint64_t watch_id;
  void *timer;
  tr_kvop *pnext, *pprev; /* direct waits in flight */
};

/* Direct mode: operations on the attached server of this loop. */
tr_kv *tr_kv_direct(struct uv_loop_s *loop, struct em_store_server *srv);
/* Remote mode: a client to host:port on two helper threads (short
 * requests; long waits). connect_timeout_ms bounds the first connect
 * (the host may start later), request_timeout_ms every request. */
tr_kv *tr_kv_remote(struct uv_loop_s *loop, const char *host, int port, const char *secret,
                    int64_t connect_timeout_ms, int64_t request_timeout_ms);
/* Starts an operation; the key and value are copied. Returns the op
 * (owned by kv, valid until its callback returns) or NULL on OOM. */
tr_kvop *tr_kv_start(tr_kv *kv, tr_kv_kind kind, const char *key, const char *val,
                     int64_t arg, tr_kv_cb cb, void *ctx);
/* Cancels a pending op: its callback runs with EM_ERR_INTERRUPTED (at
 * once for direct waits, within a fraction of a second for remote ones). */
void tr_kv_cancel(tr_kvop *op);
/* Cancels everything, joins the threads, closes the loop handles; pending
 * callbacks are not called. */
void tr_kv_close(tr_kv *kv);

/* ---- agent.c ---- */

/* Runs the job; returns trainrun's exit code. */
int tr_agent_run(tr_options *o, const tr_command *cmd);

#endif
