/* Store operations that never block the agent's loop.
 *
 * The node-0 agent hosts the store server on its own loop, so it works on
 * the server directly (em_store_server_*; waits are server watches). Every
 * other agent reaches the store through the blocking TCP client, run on two
 * helper threads: "ctl" for short requests in order (join, heartbeats,
 * publishing a failure) and "wait" for the long waits (the world, the end of
 * a round), so a heartbeat never queues behind a wait. Either way a result
 * comes back to the loop through one uv_async, and the callback always runs
 * later on the loop thread, never inside tr_kv_start.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "comm/store.h"
#include "launcher/launcher_impl.h"

#define WAIT_SLICE_MS 250 /* a remote wait re-checks for cancellation this often */

typedef struct chan {
  tr_kv *kv;
  const char *name;
  uv_thread_t thread;
  bool started;
  uv_mutex_t mu;
  uv_cond_t cv;
  tr_kvop *head, *tail;
  bool quit;
  em_store *store; /* used by the thread only */
} chan;

struct tr_kv {
  uv_loop_t *loop;
  em_store_server *srv; /* direct mode */
  uv_async_t async;
  uv_mutex_t mu; /* the done list */
  tr_kvop *done_head, *done_tail;
  bool closing;
  tr_kvop *waits; /* direct waits in flight */
  /* remote mode */
  char *host;
  int port;
  char *secret;
  int64_t connect_timeout_ms, request_timeout_ms;
  chan ctl, wait;
  int quit; /* atomic: stop connecting/waiting */
};

static void op_free(tr_kvop *op) {
  free(op->key);
  free(op->val);
  free(op->out);
  free(op->err);
  free(op);
}

static void set_err(tr_kvop *op, em_status st, const char *msg) {
  op->st = st;
  free(op->err);
  op->err = strdup(msg && *msg ? msg : em_status_name(st));
}

/* Hands a finished op to the loop (from any thread). */
static void complete(tr_kvop *op) {
  tr_kv *kv = op->kv;
  uv_mutex_lock(&kv->mu);
  op->pending = false;
  op->next = NULL;
  if (kv->done_tail) kv->done_tail->next = op;
  else kv->done_head = op;
  kv->done_tail = op;
  uv_mutex_unlock(&kv->mu);
  uv_async_send(&kv->async);
}

static void on_async(uv_async_t *a) {
  tr_kv *kv = a->data;
  for (;;) {
    uv_mutex_lock(&kv->mu);
    tr_kvop *list = kv->done_head;
    kv->done_head = kv->done_tail = NULL;
    uv_mutex_unlock(&kv->mu);
    if (!list) break;
    while (list) {
      tr_kvop *op = list;
      list = list->next;
      if (!kv->closing && op->cb) op->cb(op);
      op_free(op);
    }
  }
}

static tr_kv *kv_new(uv_loop_t *loop) {
  tr_kv *kv = calloc(1, sizeof *kv);
  if (!kv) {
    em_set_error(EM_ERR_NOMEM, "out of memory");
    return NULL;
  }
  kv->loop = loop;
  if (uv_mutex_init(&kv->mu) != 0) {
    free(kv);
    em_set_error(EM_ERR_INTERNAL, "uv_mutex_init failed");
    return NULL;
  }
  uv_async_init(loop, &kv->async, on_async);
  kv->async.data = kv;
  return kv;
}

/* ---- direct: the server on this loop ------------------------------------------ */

static void waits_unlink(tr_kvop *op) {
  tr_kv *kv = op->kv;
  if (op->pprev) op->pprev->pnext = op->pnext;
  else if (kv->waits == op) kv->waits = op->pnext;
  if (op->pnext) op->pnext->pprev = op->pprev;
  op->pnext = op->pprev = NULL;
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

static void stop_timer(tr_kvop *op) {
  if (!op->timer) return;
  uv_timer_stop(op->timer);
  uv_close(op->timer, on_timer_closed);
  op->timer = NULL;
}

static void direct_wait_done(tr_kvop *op, em_status st, const char *msg) {
  if (!op->pending) return;
  stop_timer(op);
  waits_unlink(op);
  if (st == EM_OK) {
    void *v = NULL;
    size_t n = 0;
    bool found = false;
    st = em_store_server_get(op->kv->srv, op->key, &v, &n, &found);
    if (st) set_err(op, st, em_last_error());
    else if (!found) set_err(op, EM_ERR_STATE, "the key vanished before it could be read");
    else {
      op->out = v;
      op->outlen = n;
    }
  } else {
    set_err(op, st, msg);
  }
  complete(op);
}

static void on_watch(em_store_server *srv, em_status st, void *ctx) {
  (void)srv;
  direct_wait_done(ctx, st == EM_OK ? EM_OK : EM_ERR_COMM,
                   st == EM_OK ? NULL : "the store server stopped");
}

static void on_wait_timeout(uv_timer_t *t) {
  tr_kvop *op = t->data;
  em_store_server_unwatch(op->kv->srv, op->watch_id);
  char msg[256];
  snprintf(msg, sizeof msg, "timed out after %.1f s waiting for '%s'", (double)op->arg / 1e3,
           op->key);
  direct_wait_done(op, EM_ERR_TIMEOUT, msg);
}

static void direct_start(tr_kvop *op) {
  tr_kv *kv = op->kv;
  em_store_server *srv = kv->srv;
  em_status st = EM_OK;
  switch (op->kind) {
    case TR_KV_SET:
      st = em_store_server_set(srv, op->key, op->val, op->vlen);
      break;
    case TR_KV_GET: {
      void *v = NULL;
      size_t n = 0;
      st = em_store_server_get(srv, op->key, &v, &n, &op->found);
      op->out = v;
      op->outlen = n;
      break;
    }
    case TR_KV_ADD:
      st = em_store_server_add(srv, op->key, op->arg, &op->num);
      break;
    case TR_KV_SETNX: {
      void *v = NULL;
      size_t n = 0;
      bool found = false;
      st = em_store_server_get(srv, op->key, &v, &n, &found);
      if (!st && !found) {
        st = em_store_server_set(srv, op->key, op->val, op->vlen);
        if (!st) {
          v = malloc(op->vlen + 1);
          if (!v) st = em_set_error(EM_ERR_NOMEM, "out of memory");
          else {
            memcpy(v, op->val, op->vlen);
            ((char *)v)[op->vlen] = 0;
            n = op->vlen;
          }
        }
      }
      op->out = v;
      op->outlen = n;
      break;
    }
    case TR_KV_WAIT: {
      op->pnext = kv->waits;
      if (kv->waits) kv->waits->pprev = op;
      kv->waits = op;
      if (op->arg >= 0) {
        uv_timer_t *t = malloc(sizeof *t);
        if (!t) {
          waits_unlink(op);
          st = em_set_error(EM_ERR_NOMEM, "out of memory");
          break;
        }
        uv_timer_init(kv->loop, t);
        t->data = op;
        op->timer = t;
        uv_timer_start(t, on_wait_timeout, (uint64_t)op->arg, 0);
      }
      const char *keys[1] = {op->key};
      /* may call on_watch at once when the key already exists */
      st = em_store_server_watch(srv, keys, 1, on_watch, op, &op->watch_id);
      if (st) {
        if (op->pending) {
          stop_timer(op);
          waits_unlink(op);
          break;
        }
        st = EM_OK;
      }
      return;
    }
  }
  if (st) set_err(op, st, em_last_error());
  complete(op);
}

tr_kv *tr_kv_direct(uv_loop_t *loop, em_store_server *srv) {
  tr_kv *kv = kv_new(loop);
  if (kv) kv->srv = srv;
  return kv;
}

/* ---- remote: a client on helper threads ---------------------------------------- */

static bool quitting(tr_kvop *op) {
  return __atomic_load_n(&op->cancelled, __ATOMIC_ACQUIRE) ||
         __atomic_load_n(&op->kv->quit, __ATOMIC_ACQUIRE);
}

/* Connects (retrying while nobody listens yet) in slices, so closing the
 * agent does not wait out a long connect timeout. */
static em_status chan_connect(chan *ch, tr_kvop *op) {
  tr_kv *kv = ch->kv;
  uint64_t start = uv_hrtime();
  for (;;) {
    int64_t left = kv->connect_timeout_ms - (int64_t)((uv_hrtime() - start) / 1000000);
    if (left <= 0) left = 1;
    int64_t slice = left < 1000 ? left : 1000;
    em_store_options so = {.timeout_ms = kv->request_timeout_ms,
                           .connect_timeout_ms = slice,
                           .secret = kv->secret ? kv->secret : ""};
    ch->store = em_store_tcp_connect(kv->host, kv->port, &so);
    if (ch->store) return EM_OK;
    if (em_last_status() != EM_ERR_TIMEOUT || slice == left) return em_last_status();
    if (quitting(op)) return em_set_error(EM_ERR_INTERRUPTED, "interrupted while connecting");
  }
}

static void remote_run(chan *ch, tr_kvop *op) {
  em_status st = EM_OK;
  if (quitting(op)) {
    set_err(op, EM_ERR_INTERRUPTED, "cancelled");
    return;
  }
  if (!ch->store && (st = chan_connect(ch, op))) {
    set_err(op, st, em_last_error());
    return;
  }
  em_store *s = ch->store;
  switch (op->kind) {
    case TR_KV_SET:
      st = em_store_set(s, op->key, op->val, op->vlen);
      break;
    case TR_KV_GET: {
      void *v = NULL;
      size_t n = 0;
      st = em_store_get_timeout(s, op->key, 0, &v, &n);
      if (st == EM_ERR_TIMEOUT) {
        st = EM_OK;
      } else if (!st) {
        op->found = true;
        op->out = v;
        op->outlen = n;
      }
      break;
    }
    case TR_KV_ADD:
      st = em_store_add(s, op->key, op->arg, &op->num);
      break;
    case TR_KV_SETNX: {
      void *v = NULL;
      size_t n = 0;
      st = em_store_compare_set(s, op->key, "", 0, op->val, op->vlen, &v, &n);
      op->out = v;
      op->outlen = n;
      break;
    }
    case TR_KV_WAIT: {
      uint64_t start = uv_hrtime();
      for (;;) {
        int64_t slice = WAIT_SLICE_MS;
        if (op->arg >= 0) {
          int64_t left = op->arg - (int64_t)((uv_hrtime() - start) / 1000000);
          if (left <= 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "timed out after %.1f s waiting for '%s'",
                     (double)op->arg / 1e3, op->key);
            set_err(op, EM_ERR_TIMEOUT, msg);
            return;
          }
          if (left < slice) slice = left;
        }
        void *v = NULL;
        size_t n = 0;
        st = em_store_get_timeout(s, op->key, slice, &v, &n);
        if (st == EM_OK) {
          op->out = v;
          op->outlen = n;
          break;
        }
        if (st != EM_ERR_TIMEOUT) break;
        if (quitting(op)) {
          set_err(op, EM_ERR_INTERRUPTED, "cancelled");
          return;
        }
      }
      break;
    }
  }
  if (st) set_err(op, st, em_last_error());
}

static void chan_main(void *arg) {
  chan *ch = arg;
  for (;;) {
    uv_mutex_lock(&ch->mu);
    while (!ch->head && !ch->quit) uv_cond_wait(&ch->cv, &ch->mu);
    if (!ch->head) {
      uv_mutex_unlock(&ch->mu);
      break;
    }
    tr_kvop *op = ch->head;
    ch->head = op->next;
    if (!ch->head) ch->tail = NULL;
    uv_mutex_unlock(&ch->mu);
    remote_run(ch, op);
    complete(op);
  }
  em_store_release(ch->store);
  ch->store = NULL;
}

static int chan_init(chan *ch, tr_kv *kv, const char *name) {
  ch->kv = kv;
  ch->name = name;
  if (uv_mutex_init(&ch->mu) != 0) return -1;
  if (uv_cond_init(&ch->cv) != 0) {
    uv_mutex_destroy(&ch->mu);
    return -1;
  }
  if (uv_thread_create(&ch->thread, chan_main, ch) != 0) {
    uv_cond_destroy(&ch->cv);
    uv_mutex_destroy(&ch->mu);
    return -1;
  }
  ch->started = true;
  return 0;
}

static void chan_push(chan *ch, tr_kvop *op) {
  uv_mutex_lock(&ch->mu);
  op->next = NULL;
  if (ch->tail) ch->tail->next = op;
  else ch->head = op;
  ch->tail = op;
  uv_cond_signal(&ch->cv);
  uv_mutex_unlock(&ch->mu);
}

static void chan_stop(chan *ch) {
  if (!ch->started) return;
  uv_mutex_lock(&ch->mu);
  ch->quit = true;
  /* drop what has not started; its callbacks are not wanted any more */
  tr_kvop *op = ch->head;
  ch->head = ch->tail = NULL;
  uv_cond_signal(&ch->cv);
  uv_mutex_unlock(&ch->mu);
  while (op) {
    tr_kvop *next = op->next;
    op_free(op);
    op = next;
  }
  uv_thread_join(&ch->thread);
  uv_cond_destroy(&ch->cv);
  uv_mutex_destroy(&ch->mu);
  ch->started = false;
}

tr_kv *tr_kv_remote(uv_loop_t *loop, const char *host, int port, const char *secret,
                    int64_t connect_timeout_ms, int64_t request_timeout_ms) {
  tr_kv *kv = kv_new(loop);
  if (!kv) return NULL;
  kv->host = strdup(host);
  kv->secret = strdup(secret ? secret : "");
  kv->port = port;
  kv->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 1;
  kv->request_timeout_ms = request_timeout_ms > 0 ? request_timeout_ms : 1;
  if (!kv->host || !kv->secret || chan_init(&kv->ctl, kv, "ctl") != 0 ||
      chan_init(&kv->wait, kv, "wait") != 0) {
    em_set_error(EM_ERR_INTERNAL, "cannot start the store client threads");
    tr_kv_close(kv);
    return NULL;
  }
  return kv;
}

/* ---- the API --------------------------------------------------------------------- */

tr_kvop *tr_kv_start(tr_kv *kv, tr_kv_kind kind, const char *key, const char *val, int64_t arg,
                     tr_kv_cb cb, void *ctx) {
  tr_kvop *op = calloc(1, sizeof *op);
  if (!op) return NULL;
  op->kind = kind;
  op->kv = kv;
  op->cb = cb;
  op->ctx = ctx;
  op->arg = arg;
  op->pending = true;
  op->key = strdup(key);
  if (val) {
    op->vlen = strlen(val);
    op->val = strdup(val);
  }
  if (!op->key || (val && !op->val)) {
    op_free(op);
    return NULL;
  }
  if (kv->srv) direct_start(op);
  else chan_push(kind == TR_KV_WAIT ? &kv->wait : &kv->ctl, op);
  return op;
}

void tr_kv_cancel(tr_kvop *op) {
  if (!op || !op->pending) return;
  __atomic_store_n(&op->cancelled, 1, __ATOMIC_RELEASE);
  if (op->kv->srv && op->kind == TR_KV_WAIT) {
    em_store_server_unwatch(op->kv->srv, op->watch_id);
    direct_wait_done(op, EM_ERR_INTERRUPTED, "cancelled");
  }
}

static void on_async_closed(uv_handle_t *h) {
  tr_kv *kv = h->data;
  /* ops completed after the last async callback */
  tr_kvop *op = kv->done_head;
  while (op) {
    tr_kvop *next = op->next;
    op_free(op);
    op = next;
  }
  uv_mutex_destroy(&kv->mu);
  free(kv->host);
  free(kv->secret);
  free(kv);
}

void tr_kv_close(tr_kv *kv) {
  if (!kv) return;
  kv->closing = true;
  __atomic_store_n(&kv->quit, 1, __ATOMIC_RELEASE);
  while (kv->waits) {
    tr_kvop *op = kv->waits;
    em_store_server_unwatch(kv->srv, op->watch_id);
    direct_wait_done(op, EM_ERR_INTERRUPTED, "closing");
  }
  chan_stop(&kv->ctl);
  chan_stop(&kv->wait);
  uv_close((uv_handle_t *)&kv->async, on_async_closed);
}
