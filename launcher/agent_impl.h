/* The trainrun agent's state, shared by agent.c (rounds, outcome,
 * signals, set-up), supervise.c (spawning and stopping the workers) and
 * coord.c (what node 0's agent does besides: rendezvous, the end of a
 * round, heartbeat checks). Functions here are tr__ (internal across these
 * files); see agent.c for the protocol. */
#ifndef EMBER_LAUNCHER_AGENT_IMPL_H
#define EMBER_LAUNCHER_AGENT_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "comm/store.h"
#include "launcher/launcher_impl.h"

typedef struct agent agent;

typedef struct worker {
  agent *a;
  int local_rank, rank;
  pid_t pid; /* also its process group; 0 = never started */
  bool running;
  bool group_gone;
  int status;
  uint64_t t_start, t_exit;
  tr_stream out, err;
  uv_poll_t *pout, *perr;
  tr_line_tail tail;
  int logfd;
} worker;

typedef struct node {
  int slot, node_rank, nproc, rank_offset, requested;
  long pid;
  char host[256];
  /* coordinator's bookkeeping */
  char hb_last[32];
  uint64_t hb_seen;
  bool lost;
} node;

typedef enum { PH_RDZV, PH_RUN, PH_STOP, PH_DONE } phase;
typedef enum { END_NONE, END_OK, END_FAIL, END_LOST, END_SIGNAL, END_ERROR } end_kind;

struct agent {
  uv_loop_t loop;
  tr_options *o;
  const tr_command *cmd;
  int exit_code;
  bool shutting_down;
  uint64_t t0;
  /* signals and the guardian */
  uv_signal_t sig[8];
  int nsig;
  uv_signal_t sigchld;
  int guard_fd;
  pid_t guard_pid;
  /* the store */
  bool coordinator;
  em_store_server *srv;
  tr_kv *kv;
  char secret[80];
  char master_addr[256];
  int master_port;
  char *prefix; /* trainrun/<run id>/ */
  char *log_root;
  /* the round */
  int round;
  phase ph;
  int slot;
  tr_kvop *world_op, *end_op, *hb_op;
  bool coord_lost;
  /* the world */
  int nnodes, node_rank, world_size, rank_offset, max_restarts;
  node *nodes;
  worker *w;
  int nw, nlive;
  bool terminating, force_stopped, local_stopped, done_sent;
  uint64_t hb_count;
  uv_timer_t grace_timer, deadline_timer, hb_timer, rdzv_timer, last_call_timer, progress_timer,
      ack_timer;
  /* the outcome */
  end_kind end;
  int end_code;
  char *end_desc;
  char *my_end; /* what this agent published as the end, if anything */
  bool local_failure;
  int user_sig;
  /* coordinator */
  node *joined; /* by slot, [nnodes_max] */
  tr_kvop **node_ops, **done_ops, **ack_ops;
  int njoined, ndone, nack_ops;
  bool finalized;
};

/* agent.c */
/* "trainrun/<id>/r<round>/<fmt...>" in a static buffer (kv copies keys). */
const char *tr__rkey(agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Starts a store operation tagged with the current round (callbacks from
 * an earlier round are ignored); NULL on OOM (reported). */
tr_kvop *tr__kv(agent *a, tr_kv_kind kind, const char *key, const char *val, int64_t arg,
                tr_kv_cb cb);
void tr__timer_stop(uv_timer_t *t);
double tr__since(uint64_t t);
const char *tr__endpoint(agent *a);
/* A wait status as an exit code: the code, or 128+N for signal N. */
int tr__wait_code(int st);
void tr__describe_status(int st, char *buf, size_t size);
void tr__start_round(agent *a);
/* A local worker failed (why: it could not be started): summary, stop,
 * tell the other nodes. */
void tr__local_failure(agent *a, worker *w, const char *why);
void tr__publish_done(agent *a);
void tr__publish_end(agent *a, const char *value);
void tr__handle_end(agent *a, const char *value);
void tr__maybe_round_over(agent *a);
void tr__finish(agent *a, int code);
void tr__shutdown(agent *a);

/* supervise.c */
void tr__launch_workers(agent *a);
void tr__free_workers(agent *a);
void tr__kill_groups(agent *a, int sig);
/* sig to every live worker group, then the grace period, then SIGKILL. */
void tr__terminate_all(agent *a, int sig);
void tr__begin_stop(agent *a, int sig);
/* Whether every process of the round is gone; if so, moves on. */
void tr__check_stopped(agent *a);
void tr__on_sigchld(uv_signal_t *h, int signum);
int tr__mkdir_p(const char *path);

/* coord.c */
void tr__coord_rdzv_begin(agent *a);
void tr__coord_run_begin(agent *a);
void tr__coord_round_over(agent *a);
/* Publishes "error <msg>" as the world: every agent's world wait ends. */
void tr__coord_fail_rdzv(agent *a, const char *msg);
void tr__on_hb_check(uv_timer_t *t);

#endif
