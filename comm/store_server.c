/* The store server: a libuv loop serving the key-value table.
 *
 * Everything here runs on the loop's thread: the server's own (started
 * with em_store_server_start) or the caller's (em_store_server_attach).
 *
 * A connection starts in HANDSHAKE: the server sends Hello with a fresh
 * random challenge and arms a timer; the client must answer with a valid
 * Auth before the timer fires, in frames of at most 1 KiB, or it is
 * refused, logged and closed. Then it is READY: each frame is one Request,
 * handled at once. A GET or WAIT on missing keys becomes a waiter: it is
 * registered on each missing key's table entry (an entry may exist with no
 * value only to hold waiters) and answered when its last key is set; it
 * dies with its connection or by OP_CANCEL. Local watches (the hosting
 * process's em_store_server_watch) are waiters without a connection whose
 * callbacks run after the operation that fired them, so user code never
 * runs while the table is being changed.
 *
 * Anything malformed (bad protobuf, oversize length, garbage before the
 * handshake) closes that one connection with a log line naming the peer;
 * the server carries on.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#include "comm/store_impl.h"

/* A client that stops reading its answers is cut off once this much is
 * queued for it. */
#define MAX_WRITE_QUEUE ((size_t)EM__STORE_MAX_FRAME + (64u << 20))

typedef struct conn conn;

typedef enum { W_GET, W_WAIT, W_WATCH } waiter_kind;

typedef struct waiter {
  uint64_t id; /* request id (remote) or watch id (local) */
  waiter_kind kind;
  conn *c; /* NULL for a local watch */
  size_t nkeys;
  ProtobufCBinaryData *keys; /* copies */
  size_t remaining;          /* registrations not yet satisfied */
  em_store_watch_cb cb;
  void *cb_ctx;
  em_status fire_status;
  struct waiter *prev, *next; /* in c->waiters, srv->watches or srv->fired */
} waiter;

typedef struct entry {
  struct entry *next; /* hash chain */
  uint64_t hash;
  uint8_t *key;
  size_t klen;
  uint8_t *value; /* malloc'd, may be NULL for an empty value */
  size_t vlen;
  bool has_value;
  waiter **waiters;
  size_t nwaiters, capwaiters;
} entry;

/* C_DOOMED: failed while the table was being changed (a write error while
 * waking waiters); closed from a zero timer so that nothing it owns is
 * freed under the feet of the code that is iterating. */
typedef enum { C_HANDSHAKE, C_READY, C_REFUSED, C_DOOMED, C_CLOSING } conn_state;

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  em_store_server *srv;
  conn *prev, *next;
  conn_state state;
  int open_handles;
  uint8_t challenge[EM__STORE_CHALLENGE_BYTES];
  char peer[64];
  em__store_reader reader;
  waiter *waiters;
};

struct em_store_server {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  bool threaded;
  bool thread_running;
  uv_thread_t thread;
  uv_async_t stop_async;
  bool async_inited, listener_inited;
  uv_tcp_t listener;
  int open_handles; /* listener, async, one per live connection */
  bool stopping;
  bool destroy_requested;
  int port;
  char addr[300];
  char *secret;
  int64_t auth_timeout_ms;
  void (*log)(void *, const char *);
  void *log_ctx;
  conn *conns;
  int nconns; /* atomic: read by em_store_server_num_clients from any thread */
  /* the table */
  entry **buckets;
  size_t nbuckets, nentries;
  int64_t nvalues;
  uint8_t hash_key[crypto_shorthash_KEYBYTES];
  /* local watches: pending and fired-but-not-yet-called */
  waiter *watches, *fired;
  uint64_t next_watch_id;
  uint8_t readbuf[64 * 1024];
};

static void slog(em_store_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void slog(em_store_server *srv, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (srv->log) srv->log(srv->log_ctx, line);
  else fprintf(stderr, "[ember store] %s\n", line);
}

/* ==== the table ============================================================ */

static uint64_t hash_key(const em_store_server *srv, const uint8_t *k, size_t n) {
  uint8_t out[crypto_shorthash_BYTES];
  crypto_shorthash(out, k, n, srv->hash_key);
  uint64_t h;
  memcpy(&h, out, sizeof h);
  return h;
}

static entry *table_find(const em_store_server *srv, const uint8_t *k, size_t n, uint64_t h) {
  if (!srv->nbuckets) return NULL;
  for (entry *e = srv->buckets[h & (srv->nbuckets - 1)]; e; e = e->next)
    if (e->hash == h && e->klen == n && (n == 0 || memcmp(e->key, k, n) == 0)) return e;
  return NULL;
}

static entry *lookup(const em_store_server *srv, const uint8_t *k, size_t n) {
  return table_find(srv, k, n, hash_key(srv, k, n));
}

static bool table_grow(em_store_server *srv) {
  size_t nb = srv->nbuckets ? srv->nbuckets * 2 : 64;
  entry **b = calloc(nb, sizeof *b);
  if (!b) return false;
  for (size_t i = 0; i < srv->nbuckets; i++) {
    for (entry *e = srv->buckets[i], *next; e; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  free(srv->buckets);
  srv->buckets = b;
  srv->nbuckets = nb;
  return true;
}

/* The entry for key, created (without a value) if missing; NULL on OOM. */
static entry *table_get_or_add(em_store_server *srv, const uint8_t *k, size_t n) {
  uint64_t h = hash_key(srv, k, n);
  entry *e = table_find(srv, k, n, h);
  if (e) return e;
  if (srv->nentries >= srv->nbuckets && !table_grow(srv) && !srv->nbuckets) return NULL;
  e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->key = malloc(n ? n : 1);
  if (!e->key) {
    free(e);
    return NULL;
  }
  if (n) memcpy(e->key, k, n);
  e->klen = n;
  e->hash = h;
  size_t b = h & (srv->nbuckets - 1);
  e->next = srv->buckets[b];
  srv->buckets[b] = e;
  srv->nentries++;
  return e;
}

static void table_remove(em_store_server *srv, entry *e) {
  entry **pp = &srv->buckets[e->hash & (srv->nbuckets - 1)];
  while (*pp != e) pp = &(*pp)->next;
  *pp = e->next;
  srv->nentries--;
  if (e->has_value) srv->nvalues--;
  free(e->key);
  free(e->value);
  free(e->waiters);
  free(e);
}

/* Drops an entry that holds neither a value nor waiters. */
static void maybe_drop(em_store_server *srv, entry *e) {
  if (!e->has_value && e->nwaiters == 0) table_remove(srv, e);
}

static void table_free(em_store_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++) {
    for (entry *e = srv->buckets[i], *next; e; e = next) {
      next = e->next;
      free(e->key);
      free(e->value);
      free(e->waiters);
      free(e);
    }
  }
  free(srv->buckets);
  srv->buckets = NULL;
  srv->nbuckets = srv->nentries = 0;
  srv->nvalues = 0;
}

/* ==== waiters ================================================================== */

static void list_add(waiter **head, waiter *w) {
  w->prev = NULL;
  w->next = *head;
  if (*head) (*head)->prev = w;
  *head = w;
}

static void list_del(waiter **head, waiter *w) {
  if (w->prev) w->prev->next = w->next;
  else *head = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
}

static void waiter_free(waiter *w) {
  if (!w) return;
  for (size_t i = 0; i < w->nkeys; i++) free(w->keys[i].data);
  free(w->keys);
  free(w);
}

/* Unregisters w from the entries of its keys still waited on. */
static void waiter_unregister(em_store_server *srv, waiter *w) {
  for (size_t i = 0; i < w->nkeys; i++) {
    entry *e = lookup(srv, w->keys[i].data, w->keys[i].len);
    if (!e) continue;
    size_t o = 0;
    for (size_t j = 0; j < e->nwaiters; j++)
      if (e->waiters[j] != w) e->waiters[o++] = e->waiters[j];
    e->nwaiters = o;
    maybe_drop(srv, e);
  }
}

static waiter *waiter_new(waiter_kind kind, uint64_t id, size_t nkeys,
                          const ProtobufCBinaryData *keys) {
  waiter *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->kind = kind;
  w->id = id;
  w->keys = calloc(nkeys ? nkeys : 1, sizeof *w->keys);
  if (!w->keys) {
    free(w);
    return NULL;
  }
  for (size_t i = 0; i < nkeys; i++) {
    w->keys[i].data = malloc(keys[i].len ? keys[i].len : 1);
    if (!w->keys[i].data) {
      waiter_free(w);
      return NULL;
    }
    if (keys[i].len) memcpy(w->keys[i].data, keys[i].data, keys[i].len);
    w->keys[i].len = keys[i].len;
    w->nkeys = i + 1;
  }
  return w;
}

/* Registers w on every missing key. Returns false on OOM (w then is
 * registered nowhere). */
static bool waiter_register(em_store_server *srv, waiter *w) {
  for (size_t i = 0; i < w->nkeys; i++) {
    entry *e = table_get_or_add(srv, w->keys[i].data, w->keys[i].len);
    if (!e) goto oom;
    if (e->has_value) continue;
    /* a key named twice: we were the last to register on this entry */
    if (e->nwaiters && e->waiters[e->nwaiters - 1] == w) continue;
    if (e->nwaiters == e->capwaiters) {
      size_t cap = e->capwaiters ? e->capwaiters * 2 : 4;
      waiter **nw = realloc(e->waiters, cap * sizeof *nw);
      if (!nw) {
        maybe_drop(srv, e);
        goto oom;
      }
      e->waiters = nw;
      e->capwaiters = cap;
    }
    e->waiters[e->nwaiters++] = w;
    w->remaining++;
  }
  return true;
oom:
  waiter_unregister(srv, w);
  w->remaining = 0;
  return false;
}

/* ==== writing responses ======================================================= */

typedef struct wreq {
  uv_write_t req;
  conn *c;
  uint8_t *buf;
  bool close_after;
} wreq;

static void conn_close(conn *c);

static void on_doom_timer(uv_timer_t *t) { conn_close(t->data); }

/* Closes c on the next loop iteration (see C_DOOMED). */
static void conn_doom(conn *c, const char *why) {
  if (c->state == C_CLOSING || c->state == C_DOOMED) return;
  slog(c->srv, "closing connection from %s: %s", c->peer, why);
  c->state = C_DOOMED;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_start(&c->timer, on_doom_timer, 0, 0);
}

static void on_write(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  conn *c = w->c;
  bool close_after = w->close_after;
  free(w->buf);
  free(w);
  if (status < 0 && status != UV_ECANCELED && c->state != C_CLOSING)
    slog(c->srv, "closing connection from %s: write failed: %s", c->peer, uv_strerror(status));
  if (status < 0 || close_after) conn_close(c);
}

/* Queues msg on c. Never closes c synchronously (callers may be walking
 * waiter lists): a failure dooms it. */
static void send_msg(conn *c, const ProtobufCMessage *msg, bool close_after) {
  if (c->state == C_CLOSING || c->state == C_DOOMED) return;
  size_t len = 0;
  wreq *w = calloc(1, sizeof *w);
  uint8_t *buf = w ? em__store_frame_pack(msg, &len) : NULL;
  if (!buf) {
    free(w);
    conn_doom(c, "out of memory for a response");
    return;
  }
  w->c = c;
  w->buf = buf;
  w->close_after = close_after;
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r < 0) {
    free(buf);
    free(w);
    char why[128];
    snprintf(why, sizeof why, "write failed: %s", uv_strerror(r));
    conn_doom(c, why);
    return;
  }
  if (c->tcp.write_queue_size > MAX_WRITE_QUEUE)
    conn_doom(c, "it does not read its responses");
}

static void respond_error(conn *c, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void respond_error(conn *c, uint64_t id, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  Ember__Store__Response r = EMBER__STORE__RESPONSE__INIT;
  r.id = id;
  r.code = EMBER__STORE__CODE__CODE_ERROR;
  r.error = msg;
  send_msg(c, &r.base, false);
}

static void respond_ok(conn *c, uint64_t id) {
  Ember__Store__Response r = EMBER__STORE__RESPONSE__INIT;
  r.id = id;
  send_msg(c, &r.base, false);
}

static void respond_value(conn *c, uint64_t id, const entry *e) {
  Ember__Store__Response r = EMBER__STORE__RESPONSE__INIT;
  r.id = id;
  r.value.data = e->value;
  r.value.len = e->vlen;
  send_msg(c, &r.base, false);
}

/* ==== waking =================================================================== */

/* w's last key is set: answer it (remote) or queue its callback (local). */
static void waiter_complete(em_store_server *srv, waiter *w) {
  if (w->c) {
    conn *c = w->c;
    list_del(&c->waiters, w);
    if (w->kind == W_GET) {
      entry *e = lookup(srv, w->keys[0].data, w->keys[0].len);
      assert(e && e->has_value);
      respond_value(c, w->id, e);
    } else {
      respond_ok(c, w->id);
    }
    waiter_free(w);
  } else {
    list_del(&srv->watches, w);
    w->fire_status = EM_OK;
    list_add(&srv->fired, w);
  }
}

/* e just got a value: every waiter registered on it has one key fewer to
 * wait for. */
static void wake(em_store_server *srv, entry *e) {
  if (!e->nwaiters) return;
  waiter **ws = e->waiters;
  size_t n = e->nwaiters;
  e->waiters = NULL;
  e->nwaiters = e->capwaiters = 0;
  for (size_t i = 0; i < n; i++) {
    waiter *w = ws[i];
    assert(w->remaining > 0);
    if (--w->remaining == 0) waiter_complete(srv, w);
  }
  free(ws);
}

/* Runs the callbacks of fired local watches (after the table settled). */
static void run_fired(em_store_server *srv) {
  while (srv->fired) {
    waiter *w = srv->fired;
    list_del(&srv->fired, w);
    em_store_watch_cb cb = w->cb;
    void *ctx = w->cb_ctx;
    em_status st = w->fire_status;
    waiter_free(w);
    cb(srv, st, ctx);
  }
}

/* ==== the operations (shared by requests and the direct API) ================== */

/* Stores a copy of value into e and wakes its waiters; false on OOM. */
static bool entry_set(em_store_server *srv, entry *e, const uint8_t *value, size_t len) {
  uint8_t *v = NULL;
  if (len) {
    v = malloc(len);
    if (!v) return false;
    memcpy(v, value, len);
  }
  free(e->value);
  e->value = v;
  e->vlen = len;
  if (!e->has_value) srv->nvalues++;
  e->has_value = true;
  wake(srv, e);
  return true;
}

static em_status op_set(em_store_server *srv, const uint8_t *k, size_t kn, const uint8_t *v,
                        size_t vn) {
  entry *e = table_get_or_add(srv, k, kn);
  if (!e || !entry_set(srv, e, v, vn)) {
    if (e) maybe_drop(srv, e);
    return em__set_error(EM_ERR_NOMEM, "out of memory storing a %zu-byte value", vn);
  }
  return EM_OK;
}

static em_status op_add(em_store_server *srv, const uint8_t *k, size_t kn, int64_t delta,
                        int64_t *out) {
  int64_t cur = 0;
  entry *e = lookup(srv, k, kn);
  char kr[EM__KEY_REPR_MAX];
  if (e && e->has_value && !em__store_parse_int64(e->value, e->vlen, &cur)) {
    char vr[EM__KEY_REPR_MAX];
    return em__set_error(EM_ERR_INVALID, "value of key %s is not an integer: %s",
                         em__store_key_repr(k, kn, kr, sizeof kr),
                         em__store_key_repr(e->value, e->vlen, vr, sizeof vr));
  }
  int64_t sum;
  if (__builtin_add_overflow(cur, delta, &sum))
    return em__set_error(EM_ERR_INVALID, "adding %lld to %lld at key %s overflows int64",
                         (long long)delta, (long long)cur,
                         em__store_key_repr(k, kn, kr, sizeof kr));
  char text[32];
  int n = snprintf(text, sizeof text, "%lld", (long long)sum);
  EM_CHECK(op_set(srv, k, kn, (const uint8_t *)text, (size_t)n));
  *out = sum;
  return EM_OK;
}

static em_status op_delete(em_store_server *srv, const uint8_t *k, size_t kn, bool *existed) {
  entry *e = lookup(srv, k, kn);
  *existed = e && e->has_value;
  if (!*existed) return EM_OK;
  free(e->value);
  e->value = NULL;
  e->vlen = 0;
  e->has_value = false;
  srv->nvalues--;
  maybe_drop(srv, e);
  return EM_OK;
}

/* ==== requests ==================================================================== */

static bool key_count_ok(conn *c, const Ember__Store__Request *q, const char *op) {
  if (q->n_keys == 1) return true;
  respond_error(c, q->id, "%s needs exactly one key, got %zu", op, q->n_keys);
  return false;
}

static bool value_ok(conn *c, const Ember__Store__Request *q, const char *op, size_t len) {
  if (len <= EM_STORE_MAX_VALUE) return true;
  respond_error(c, q->id, "%s: value of %zu bytes exceeds the %u-byte limit", op, len,
                EM_STORE_MAX_VALUE);
  return false;
}

static void park(conn *c, const Ember__Store__Request *q, waiter_kind kind) {
  em_store_server *srv = c->srv;
  waiter *w = waiter_new(kind, q->id, q->n_keys, q->keys);
  if (!w || !waiter_register(srv, w)) {
    waiter_free(w);
    respond_error(c, q->id, "server out of memory");
    return;
  }
  if (w->remaining == 0) { /* everything was there after all */
    w->c = c;
    list_add(&c->waiters, w);
    waiter_complete(srv, w);
    return;
  }
  w->c = c;
  list_add(&c->waiters, w);
}

static void handle_cancel(conn *c, const Ember__Store__Request *q) {
  em_store_server *srv = c->srv;
  waiter *w = c->waiters;
  while (w && w->id != q->cancel_id) w = w->next;
  if (w) {
    list_del(&c->waiters, w);
    waiter_unregister(srv, w);
    ProtobufCBinaryData *missing = calloc(w->nkeys ? w->nkeys : 1, sizeof *missing);
    size_t nm = 0;
    for (size_t i = 0; missing && i < w->nkeys; i++) {
      entry *e = lookup(srv, w->keys[i].data, w->keys[i].len);
      if (!e || !e->has_value) missing[nm++] = w->keys[i];
    }
    Ember__Store__Response r = EMBER__STORE__RESPONSE__INIT;
    r.id = w->id;
    r.code = EMBER__STORE__CODE__CODE_CANCELED;
    r.n_missing = nm;
    r.missing = missing;
    send_msg(c, &r.base, false);
    free(missing);
    waiter_free(w);
  }
  respond_ok(c, q->id);
}

static void handle_request(conn *c, const Ember__Store__Request *q) {
  em_store_server *srv = c->srv;
  Ember__Store__Response r = EMBER__STORE__RESPONSE__INIT;
  r.id = q->id;
  switch (q->op) {
    case EMBER__STORE__OP__OP_SET:
      if (!key_count_ok(c, q, "set") || !value_ok(c, q, "set", q->value.len)) return;
      if (op_set(srv, q->keys[0].data, q->keys[0].len, q->value.data, q->value.len) != EM_OK) {
        respond_error(c, q->id, "%s", em_last_error());
        return;
      }
      send_msg(c, &r.base, false);
      return;
    case EMBER__STORE__OP__OP_GET: {
      if (!key_count_ok(c, q, "get")) return;
      entry *e = lookup(srv, q->keys[0].data, q->keys[0].len);
      if (e && e->has_value) respond_value(c, q->id, e);
      else park(c, q, W_GET);
      return;
    }
    case EMBER__STORE__OP__OP_ADD:
      if (!key_count_ok(c, q, "add")) return;
      if (op_add(srv, q->keys[0].data, q->keys[0].len, q->delta, &r.number) != EM_OK) {
        respond_error(c, q->id, "%s", em_last_error());
        return;
      }
      send_msg(c, &r.base, false);
      return;
    case EMBER__STORE__OP__OP_COMPARE_SET: {
      if (!key_count_ok(c, q, "compare_set") || !value_ok(c, q, "compare_set", q->value.len) ||
          !value_ok(c, q, "compare_set", q->desired.len))
        return;
      const ProtobufCBinaryData *k = &q->keys[0];
      entry *e = lookup(srv, k->data, k->len);
      if (!e || !e->has_value) {
        if (q->value.len == 0) {
          if (op_set(srv, k->data, k->len, q->desired.data, q->desired.len) != EM_OK) {
            respond_error(c, q->id, "%s", em_last_error());
            return;
          }
          r.value = q->desired;
        } else {
          r.value = q->value; /* as PyTorch: a missing key answers `expected` */
        }
      } else {
        if (e->vlen == q->value.len && (e->vlen == 0 || !memcmp(e->value, q->value.data, e->vlen)) &&
            !entry_set(srv, e, q->desired.data, q->desired.len)) {
          respond_error(c, q->id, "server out of memory");
          return;
        }
        r.value.data = e->value;
        r.value.len = e->vlen;
      }
      send_msg(c, &r.base, false);
      return;
    }
    case EMBER__STORE__OP__OP_CHECK: {
      r.flag = true;
      for (size_t i = 0; i < q->n_keys && r.flag; i++) {
        entry *e = lookup(srv, q->keys[i].data, q->keys[i].len);
        r.flag = e && e->has_value;
      }
      send_msg(c, &r.base, false);
      return;
    }
    case EMBER__STORE__OP__OP_WAIT:
      park(c, q, W_WAIT);
      return;
    case EMBER__STORE__OP__OP_DELETE: {
      if (!key_count_ok(c, q, "delete_key")) return;
      bool existed = false;
      op_delete(srv, q->keys[0].data, q->keys[0].len, &existed);
      r.flag = existed;
      send_msg(c, &r.base, false);
      return;
    }
    case EMBER__STORE__OP__OP_NUM_KEYS:
      r.number = srv->nvalues;
      send_msg(c, &r.base, false);
      return;
    case EMBER__STORE__OP__OP_CANCEL:
      handle_cancel(c, q);
      return;
    case EMBER__STORE__OP__OP_PING:
      send_msg(c, &r.base, false);
      return;
    default:
      respond_error(c, q->id, "unknown operation %d", (int)q->op);
      return;
  }
}

/* ==== connections ================================================================= */

static void server_handle_closed(em_store_server *srv);

static void conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->open_handles > 0) return;
  em_store_server *srv = c->srv;
  em__store_reader_reset(&c->reader);
  free(c);
  server_handle_closed(srv);
}

static void conn_close(conn *c) {
  if (c->state == C_CLOSING) return;
  em_store_server *srv = c->srv;
  c->state = C_CLOSING;
  while (c->waiters) {
    waiter *w = c->waiters;
    list_del(&c->waiters, w);
    waiter_unregister(srv, w);
    waiter_free(w);
  }
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  __atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

static void refuse(conn *c, const char *client_msg) {
  Ember__Store__AuthResult ar = EMBER__STORE__AUTH_RESULT__INIT;
  ar.ok = false;
  ar.error = (char *)client_msg;
  c->state = C_REFUSED;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  send_msg(c, &ar.base, true);
}

static void handle_auth(conn *c, const uint8_t *body, size_t len) {
  em_store_server *srv = c->srv;
  Ember__Store__Auth *a = ember__store__auth__unpack(NULL, len, body);
  if (!a) {
    slog(srv, "refused %s: malformed handshake (%zu bytes that are not an Auth message)", c->peer,
         len);
    conn_close(c);
    return;
  }
  if (a->version != EM__STORE_PROTOCOL_VERSION) {
    char msg[128];
    snprintf(msg, sizeof msg, "protocol version mismatch: server speaks %u, client %u",
             EM__STORE_PROTOCOL_VERSION, a->version);
    slog(srv, "refused %s: %s", c->peer, msg);
    refuse(c, msg);
  } else if (srv->secret && !em__store_hmac_verify(srv->secret, c->challenge,
                                                   sizeof c->challenge, a->hmac.data,
                                                   a->hmac.len)) {
    slog(srv, "refused %s: authentication failed (%s secret)", c->peer,
         a->hmac.len ? "wrong" : "no");
    refuse(c, "authentication failed: wrong or missing " EM_STORE_SECRET_ENV);
  } else {
    Ember__Store__AuthResult ar = EMBER__STORE__AUTH_RESULT__INIT;
    ar.ok = true;
    c->state = C_READY;
    uv_timer_stop(&c->timer);
    send_msg(c, &ar.base, false);
  }
  ember__store__auth__free_unpacked(a, NULL);
}

static void handle_frame(conn *c, const uint8_t *body, size_t len) {
  if (c->state == C_HANDSHAKE) {
    handle_auth(c, body, len);
    return;
  }
  if (c->state != C_READY) return;
  Ember__Store__Request *q = ember__store__request__unpack(NULL, len, body);
  if (!q) {
    slog(c->srv, "closing connection from %s: malformed request (%zu bytes)", c->peer, len);
    conn_close(c);
    return;
  }
  handle_request(c, q);
  ember__store__request__free_unpacked(q, NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  buf->base = (char *)c->srv->readbuf;
  buf->len = sizeof c->srv->readbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  em_store_server *srv = c->srv;
  if (nread < 0) {
    if (c->state == C_HANDSHAKE)
      slog(srv, "connection from %s closed before authenticating (%s)", c->peer,
           nread == UV_EOF ? "EOF" : uv_strerror((int)nread));
    conn_close(c);
    return;
  }
  const uint8_t *p = (const uint8_t *)buf->base;
  size_t n = (size_t)nread;
  while (n > 0 && (c->state == C_HANDSHAKE || c->state == C_READY)) {
    uint8_t *body = NULL;
    size_t len = 0;
    size_t cap = c->state == C_HANDSHAKE ? EM__STORE_MAX_AUTH_FRAME : EM__STORE_MAX_FRAME;
    em__store_read_result r = em__store_reader_feed(&c->reader, &p, &n, cap, &body, &len);
    if (r == EM__READ_MORE) break;
    if (r == EM__READ_TOO_BIG) {
      slog(srv, "closing connection from %s: frame of %zu bytes exceeds the %zu-byte cap%s",
           c->peer, len, cap, c->state == C_HANDSHAKE ? " before authentication" : "");
      conn_close(c);
      break;
    }
    if (r == EM__READ_NOMEM) {
      slog(srv, "closing connection from %s: out of memory for a frame", c->peer);
      conn_close(c);
      break;
    }
    handle_frame(c, body, len);
    free(body);
  }
  run_fired(srv);
}

static void on_auth_timeout(uv_timer_t *t) {
  conn *c = t->data;
  if (c->state != C_HANDSHAKE) return;
  slog(c->srv, "closing connection from %s: no authentication within %lld ms", c->peer,
       (long long)c->srv->auth_timeout_ms);
  conn_close(c);
}

static void peer_name(uv_tcp_t *t, char *out, size_t size) {
  struct sockaddr_storage ss = {0};
  int len = sizeof ss;
  char ip[64] = "?";
  int port = 0;
  if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  snprintf(out, size, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
}

static void on_connection(uv_stream_t *server, int status) {
  em_store_server *srv = server->data;
  if (status < 0) {
    slog(srv, "accept failed: %s", uv_strerror(status));
    return;
  }
  if (srv->stopping) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) {
    slog(srv, "out of memory accepting a connection");
    return;
  }
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  c->open_handles = 1;
  srv->open_handles++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    return;
  }
  uv_timer_init(srv->loop, &c->timer);
  c->timer.data = c;
  c->open_handles = 2;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  __atomic_add_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
  peer_name(&c->tcp, c->peer, sizeof c->peer);
  uv_tcp_nodelay(&c->tcp, 1);
  uv_tcp_keepalive(&c->tcp, 1, 30);
  c->state = C_HANDSHAKE;

  randombytes_buf(c->challenge, sizeof c->challenge);
  Ember__Store__Hello hello = EMBER__STORE__HELLO__INIT;
  hello.version = EM__STORE_PROTOCOL_VERSION;
  hello.challenge.data = c->challenge;
  hello.challenge.len = sizeof c->challenge;
  hello.auth_required = srv->secret != NULL;
  uv_timer_start(&c->timer, on_auth_timeout, (uint64_t)srv->auth_timeout_ms, 0);
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (r < 0) {
    slog(srv, "closing connection from %s: %s", c->peer, uv_strerror(r));
    conn_close(c);
    return;
  }
  send_msg(c, &hello.base, false);
}

/* ==== lifecycle ==================================================================== */

static void server_free(em_store_server *srv) {
  table_free(srv);
  if (srv->secret) {
    sodium_memzero(srv->secret, strlen(srv->secret));
    free(srv->secret);
  }
  free(srv);
}

static void server_handle_closed(em_store_server *srv) {
  if (--srv->open_handles > 0) return;
  if (srv->destroy_requested && !srv->threaded) server_free(srv);
}

static void on_server_handle_closed(uv_handle_t *h) { server_handle_closed(h->data); }

/* Fires every pending local watch with st (callbacks run later). */
static void fire_all_watches(em_store_server *srv, em_status st) {
  while (srv->watches) {
    waiter *w = srv->watches;
    list_del(&srv->watches, w);
    waiter_unregister(srv, w);
    w->fire_status = st;
    list_add(&srv->fired, w);
  }
}

static void begin_close(em_store_server *srv) {
  if (srv->stopping) return;
  srv->stopping = true;
  if (srv->listener_inited) uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
  if (srv->async_inited) uv_close((uv_handle_t *)&srv->stop_async, on_server_handle_closed);
  while (srv->conns) conn_close(srv->conns);
  fire_all_watches(srv, EM_ERR_STATE);
  run_fired(srv);
}

static void on_stop_async(uv_async_t *a) { begin_close(a->data); }

static void run_thread(void *arg) {
  em_store_server *srv = arg;
  /* libuv writes with write(2): a client gone mid-answer must be EPIPE
   * here, not a SIGPIPE that kills the hosting process. A blocked SIGPIPE
   * raised by this thread's writes just stays pending on it. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  uv_run(srv->loop, UV_RUN_DEFAULT);
}

/* Binds and listens on host:port with a plain socket first, so that a
 * failure leaves nothing on the loop to close; then hands the socket to
 * libuv. */
static em_status listen_on(em_store_server *srv, const char *host, int port) {
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, portstr, &hints, &res);
  if (gai != 0)
    return em__set_error(EM_ERR_COMM, "store server: cannot resolve '%s': %s", host,
                         gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
  int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
  int one = 1;
  int err = 0;
  if (fd < 0) err = errno;
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
           bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0)
    err = errno;
  freeaddrinfo(res);
  if (err) {
    if (fd >= 0) close(fd);
    return em__set_error(EM_ERR_COMM, "store server: cannot listen on %s:%d: %s", host, port,
                         strerror(err));
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  snprintf(srv->addr, sizeof srv->addr, "%s:%d", host, srv->port);
  int r = uv_tcp_init(srv->loop, &srv->listener);
  if (r != 0) {
    close(fd);
    return em__set_error(EM_ERR_INTERNAL, "store server: uv_tcp_init failed: %s", uv_strerror(r));
  }
  srv->listener.data = srv;
  srv->open_handles++;
  srv->listener_inited = true;
  r = uv_tcp_open(&srv->listener, fd);
  if (r == 0) r = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
  if (r != 0) /* the listener owns fd now; begin_close closes both */
    return em__set_error(EM_ERR_COMM, "store server: cannot listen on %s:%d: %s", host, port,
                         uv_strerror(r));
  return EM_OK;
}

static em_store_server *server_new(const char *op, const char *host, int port,
                                   const em_store_server_options *opts) {
  if (!host || !host[0]) return EM_FAIL(EM_ERR_INVALID, "store server: %s: host is empty", op);
  if (port < 0 || port > 65535)
    return EM_FAIL(EM_ERR_INVALID, "store server: %s: port %d is not in [0, 65535]", op, port);
  em_store_server_options o = opts ? *opts : (em_store_server_options){0};
  if (o.auth_timeout_ms < 0)
    return EM_FAIL(EM_ERR_INVALID, "store server: %s: auth_timeout_ms must be >= 0, got %lld", op,
                   (long long)o.auth_timeout_ms);
  if (em__store_crypto_init() != 0)
    return EM_FAIL(EM_ERR_INTERNAL, "store server: libsodium failed to initialise");
  em_store_server *srv = calloc(1, sizeof *srv);
  if (!srv) return EM_FAIL(EM_ERR_NOMEM, "store server: out of memory");
  const char *secret = em__store_secret(o.secret);
  if (secret && !(srv->secret = strdup(secret))) {
    free(srv);
    return EM_FAIL(EM_ERR_NOMEM, "store server: out of memory");
  }
  srv->auth_timeout_ms = o.auth_timeout_ms ? o.auth_timeout_ms : EM__STORE_AUTH_TIMEOUT_MS;
  srv->log = o.log;
  srv->log_ctx = o.log_ctx;
  randombytes_buf(srv->hash_key, sizeof srv->hash_key);
  return srv;
}

em_store_server *em_store_server_start(const char *host, int port,
                                       const em_store_server_options *opts) {
  em_store_server *srv = server_new("start", host, port, opts);
  if (!srv) return NULL;
  int r = uv_loop_init(&srv->own_loop);
  if (r != 0) {
    server_free(srv);
    return EM_FAIL(EM_ERR_INTERNAL, "store server: uv_loop_init failed: %s", uv_strerror(r));
  }
  srv->loop = &srv->own_loop;
  srv->threaded = true;
  em_status st = listen_on(srv, host, port);
  if (st == EM_OK) {
    r = uv_async_init(srv->loop, &srv->stop_async, on_stop_async);
    if (r == 0) {
      srv->stop_async.data = srv;
      srv->async_inited = true;
      srv->open_handles++;
      r = uv_thread_create(&srv->thread, run_thread, srv);
      if (r == 0) {
        srv->thread_running = true;
        return srv;
      }
      st = em__set_error(EM_ERR_INTERNAL, "store server: cannot start its thread: %s",
                         uv_strerror(r));
    } else {
      st = em__set_error(EM_ERR_INTERNAL, "store server: uv_async_init failed: %s",
                         uv_strerror(r));
    }
  }
  /* close what was opened and let the loop finish the closes */
  begin_close(srv);
  uv_run(srv->loop, UV_RUN_DEFAULT);
  uv_loop_close(srv->loop);
  server_free(srv);
  (void)st;
  return NULL;
}

em_store_server *em_store_server_attach(struct uv_loop_s *loop, const char *host, int port,
                                        const em_store_server_options *opts) {
  if (!loop) return EM_FAIL(EM_ERR_INVALID, "store server: attach: loop is NULL");
  em_store_server *srv = server_new("attach", host, port, opts);
  if (!srv) return NULL;
  srv->loop = loop;
  if (listen_on(srv, host, port) != EM_OK) {
    if (!srv->listener_inited) {
      server_free(srv);
      return NULL;
    }
    /* the listener closes as the caller's loop runs; then srv is freed */
    srv->destroy_requested = true;
    begin_close(srv);
    return NULL;
  }
  /* See run_thread: the caller's thread gets no blocked SIGPIPE from us,
   * so a SIGPIPE left at its default (terminate) is ignored instead.
   * Processes spawned through libuv start with default dispositions. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  return srv;
}

int em_store_server_port(const em_store_server *srv) { return srv ? srv->port : -1; }

int em_store_server_num_clients(const em_store_server *srv) {
  return srv ? __atomic_load_n(&srv->nconns, __ATOMIC_RELAXED) : 0;
}

void em_store_server_stop(em_store_server *srv) {
  if (!srv) return;
  if (!srv->threaded) {
    begin_close(srv);
    return;
  }
  if (!srv->thread_running) return;
  uv_async_send(&srv->stop_async);
  uv_thread_join(&srv->thread);
  srv->thread_running = false;
  int r = uv_loop_close(srv->loop);
  assert(r == 0 && "store server: handles left open on its loop");
  (void)r;
}

void em_store_server_destroy(em_store_server *srv) {
  if (!srv) return;
  if (srv->threaded) {
    em_store_server_stop(srv);
    server_free(srv);
    return;
  }
  srv->destroy_requested = true;
  begin_close(srv);
  if (srv->open_handles == 0) server_free(srv);
}

/* ---- direct access ---- */

static em_status direct_check(const char *op, const em_store_server *srv, const char *key) {
  if (!srv) return em__set_error(EM_ERR_INVALID, "store server: %s: server is NULL", op);
  if (!key) return em__set_error(EM_ERR_INVALID, "store server: %s: key is NULL", op);
  if (strnlen(key, (size_t)EM_STORE_MAX_KEY + 1) > EM_STORE_MAX_KEY)
    return em__set_error(EM_ERR_INVALID, "store server: %s: key exceeds the %u-byte limit", op,
                         EM_STORE_MAX_KEY);
  return EM_OK;
}

em_status em_store_server_set(em_store_server *srv, const char *key, const void *value,
                              size_t len) {
  EM_CHECK(direct_check("set", srv, key));
  if (!value && len)
    return em__set_error(EM_ERR_INVALID, "store server: set: value is NULL but len is %zu", len);
  if (len > EM_STORE_MAX_VALUE)
    return em__set_error(EM_ERR_INVALID,
                         "store server: set: value of %zu bytes exceeds the %u-byte limit", len,
                         EM_STORE_MAX_VALUE);
  em_status st = op_set(srv, (const uint8_t *)key, strlen(key), value, len);
  if (st) em__prefix_error("store server: set");
  run_fired(srv);
  return st;
}

em_status em_store_server_get(em_store_server *srv, const char *key, void **value, size_t *len,
                              bool *found) {
  if (value) *value = NULL;
  if (len) *len = 0;
  if (found) *found = false;
  EM_CHECK(direct_check("get", srv, key));
  if (!value || !len || !found)
    return em__set_error(EM_ERR_INVALID, "store server: get: value, len and found must not be NULL");
  entry *e = lookup(srv, (const uint8_t *)key, strlen(key));
  if (!e || !e->has_value) return EM_OK;
  *value = em__store_dup_value(e->value, e->vlen);
  if (!*value) return em__set_error(EM_ERR_NOMEM, "store server: get: out of memory");
  *len = e->vlen;
  *found = true;
  return EM_OK;
}

em_status em_store_server_add(em_store_server *srv, const char *key, int64_t delta,
                              int64_t *result) {
  EM_CHECK(direct_check("add", srv, key));
  int64_t r = 0;
  em_status st = op_add(srv, (const uint8_t *)key, strlen(key), delta, &r);
  if (st) em__prefix_error("store server: add");
  else if (result) *result = r;
  run_fired(srv);
  return st;
}

em_status em_store_server_delete_key(em_store_server *srv, const char *key, bool *existed) {
  EM_CHECK(direct_check("delete_key", srv, key));
  bool e = false;
  op_delete(srv, (const uint8_t *)key, strlen(key), &e);
  if (existed) *existed = e;
  return EM_OK;
}

int64_t em_store_server_num_keys(const em_store_server *srv) { return srv ? srv->nvalues : 0; }

em_status em_store_server_watch(em_store_server *srv, const char *const *keys, size_t nkeys,
                                em_store_watch_cb cb, void *ctx, uint64_t *id) {
  if (id) *id = 0;
  if (!srv) return em__set_error(EM_ERR_INVALID, "store server: watch: server is NULL");
  if (!cb) return em__set_error(EM_ERR_INVALID, "store server: watch: cb is NULL");
  if (!keys && nkeys) return em__set_error(EM_ERR_INVALID, "store server: watch: keys is NULL");
  if (srv->stopping)
    return em__set_error(EM_ERR_STATE, "store server: watch: the server is stopped");
  ProtobufCBinaryData *k = calloc(nkeys ? nkeys : 1, sizeof *k);
  if (!k) return em__set_error(EM_ERR_NOMEM, "store server: watch: out of memory");
  for (size_t i = 0; i < nkeys; i++) {
    em_status st = direct_check("watch", srv, keys[i]);
    if (st) {
      free(k);
      return st;
    }
    k[i].data = (uint8_t *)(uintptr_t)keys[i];
    k[i].len = strlen(keys[i]);
  }
  waiter *w = waiter_new(W_WATCH, ++srv->next_watch_id, nkeys, k);
  free(k);
  if (!w || !waiter_register(srv, w)) {
    waiter_free(w);
    return em__set_error(EM_ERR_NOMEM, "store server: watch: out of memory");
  }
  w->cb = cb;
  w->cb_ctx = ctx;
  if (id) *id = w->id;
  if (w->remaining == 0) {
    waiter_free(w);
    cb(srv, EM_OK, ctx);
    return EM_OK;
  }
  list_add(&srv->watches, w);
  return EM_OK;
}

bool em_store_server_unwatch(em_store_server *srv, uint64_t id) {
  if (!srv || !id) return false;
  for (waiter *w = srv->watches; w; w = w->next) {
    if (w->id != id) continue;
    list_del(&srv->watches, w);
    waiter_unregister(srv, w);
    waiter_free(w);
    return true;
  }
  for (waiter *w = srv->fired; w; w = w->next) {
    if (w->id != id) continue;
    list_del(&srv->fired, w);
    waiter_free(w);
    return true;
  }
  return false;
}
