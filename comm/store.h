/* ember store — the distributed key-value store that ranks meet through.
 *
 * Rendezvous and backend bootstrap (exchanging addresses, NCCL unique ids,
 * barriers) need a tiny shared dictionary every process can reach. ember's
 * is PyTorch's c10d Store: keys are strings, values are arbitrary bytes,
 * and the operations are set, get (waits until the key exists), add (an
 * integer counter kept as decimal text), compare_set, check, wait,
 * delete_key and num_keys.
 *
 * Layout:
 *   - em_store is a handle over a small vtable (em_store_ops), so several
 *     kinds of store share one API: the TCP client (em_store_tcp_connect),
 *     the prefix store (em_store_prefix_create) and any store written
 *     outside this file (em_store_create).
 *   - em_store_server is the TCP server, on libuv. It runs on its own
 *     thread (em_store_server_start) or inside a caller's loop
 *     (em_store_server_attach: the trainrun launcher does this).
 *   - Clients authenticate with a per-job secret: the server sends a random
 *     challenge, the client answers HMAC-SHA256(secret, challenge). The
 *     secret comes from the options or from EMBER_STORE_SECRET.
 *
 * A worked example (rank 0 hosts the server, everyone counts in):
 *
 *     #include "comm/store.h"
 *
 *     em_store_options o = {.timeout_ms = 60000};
 *     em_store *s = em_store_tcp_create("10.0.0.1", 29500, rank == 0, &o);
 *     if (!s) { fprintf(stderr, "%s\n", em_last_error()); return 1; }
 *     int64_t arrived = 0;
 *     em_store_add(s, "arrived", 1, &arrived);      // 1, 2, ... world
 *     if (arrived == world) em_store_set(s, "go", "1", 1);
 *     const char *keys[] = {"go"};
 *     if (em_store_wait(s, keys, 1, EM_STORE_DEFAULT_TIMEOUT) != EM_OK)
 *       fprintf(stderr, "%s\n", em_last_error());   // names the missing keys
 *
 *     em_store *job = em_store_prefix_create(s, "job7");  // keys "job7/..."
 *     void *v; size_t n;
 *     if (em_store_get(job, "addr", &v, &n) == EM_OK) {  // waits for "job7/addr"
 *       use(v, n);
 *       em_store_free(v);
 *     }
 *     em_store_release(job);   // the prefix store holds its own reference
 *     em_store_release(s);     // on rank 0 this also stops the server
 *
 * Ownership: every em_store* returned is a new reference, released with
 * em_store_release. Values returned by get/compare_set are malloc'd by
 * ember, owned by the caller and freed with em_store_free. Keys and values
 * passed in are borrowed for the duration of the call.
 *
 * Errors: functions return em_status (or NULL) and set em_last_error().
 * EM_ERR_TIMEOUT when a wait/get/connect ran out of time (the message names
 * the keys or the address), EM_ERR_COMM when the connection is lost, the
 * server refuses us (authentication) or the peer breaks the protocol,
 * EM_ERR_INVALID for bad arguments (too long keys, oversize values, add on
 * a value that is not an integer). Nothing blocks forever: every call has
 * a timeout and a lost server is an error at once, not at the timeout.
 *
 * Threads: one em_store may be used by several threads; the TCP client
 * sends one request at a time (a mutex), so a thread blocked in a long get
 * holds up the others' calls on the same client: give such a thread its
 * own connection (em_store_clone). Do not use a client across fork().
 *
 * Limits: a key is a NUL-terminated byte string (any bytes but NUL) of at
 * most EM_STORE_MAX_KEY bytes; a value is any bytes (NULs included, empty
 * allowed) of at most EM_STORE_MAX_VALUE bytes (64 MiB). On the wire every
 * frame is a 4-byte big-endian length and a protobuf message
 * (comm/store.proto); a frame above 2 * EM_STORE_MAX_VALUE + 8 MiB (room
 * for compare_set's two values) is refused by both sides, and before
 * authentication the server accepts frames of at most 1 KiB, so a stranger
 * cannot make it allocate. A peer that sends an oversize or malformed
 * frame is disconnected (and the server logs it); the server carries on.
 */
#ifndef EMBER_COMM_STORE_H
#define EMBER_COMM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest value (bytes) the store carries: 64 MiB. */
#define EM_STORE_MAX_VALUE (64u << 20)
/* Longest key (bytes, without the NUL). */
#define EM_STORE_MAX_KEY 65536u
/* Most keys one check/wait call may name. */
#define EM_STORE_MAX_KEYS 65536u
/* Pass as a timeout to mean "the store's default timeout". */
#define EM_STORE_DEFAULT_TIMEOUT ((int64_t)-1)
/* The default of the default timeout: 30 minutes, as PyTorch. */
#define EM_STORE_DEFAULT_TIMEOUT_MS ((int64_t)30 * 60 * 1000)
/* The environment variable holding the job's secret. */
#define EM_STORE_SECRET_ENV "EMBER_STORE_SECRET"

typedef struct em_store em_store;
typedef struct em_store_server em_store_server;

/* ---- the generic store ------------------------------------------------------
 *
 * Every operation below works on any kind of store. Timeouts are in
 * milliseconds; EM_STORE_DEFAULT_TIMEOUT means the store's timeout
 * (em_store_set_timeout); 0 means "do not wait at all".
 */

/* Stores key = value (len bytes; value may be NULL when len is 0),
 * replacing any old value and waking everyone waiting for key. */
EM_API em_status em_store_set(em_store *s, const char *key, const void *value, size_t len);

/* Reads key's value, waiting up to the store's timeout for the key to be
 * set (PyTorch's get). On EM_OK *value is a new malloc'd buffer of *len
 * bytes plus a terminating NUL not counted in *len (so text values are C
 * strings), freed by the caller with em_store_free. On failure *value is
 * NULL and *len 0: EM_ERR_TIMEOUT names the key. */
EM_API em_status em_store_get(em_store *s, const char *key, void **value, size_t *len);

/* em_store_get with its own timeout (EM_STORE_DEFAULT_TIMEOUT, 0 = fail at
 * once if the key is missing, or a positive number of ms). */
EM_API em_status em_store_get_timeout(em_store *s, const char *key, int64_t timeout_ms,
                                      void **value, size_t *len);

/* Adds delta to the integer counter at key (a missing key counts as 0) and
 * returns the new value in *result (may be NULL). The counter is stored as
 * decimal text ("42"), so get reads it and set can seed it. EM_ERR_INVALID
 * when the current value is not a decimal integer or the sum overflows
 * int64. */
EM_API em_status em_store_add(em_store *s, const char *key, int64_t delta, int64_t *result);

/* Atomically: if key holds expected, store desired. A missing key matches
 * an empty expected (elen 0), and then desired is stored. Returns in
 * *current, *clen the value key holds afterwards (malloc'd as for get;
 * both may be NULL to ignore it) — except that a missing key with a
 * non-empty expected returns expected and stores nothing (PyTorch's
 * TCPStore does the same). */
EM_API em_status em_store_compare_set(em_store *s, const char *key, const void *expected,
                                      size_t elen, const void *desired, size_t dlen,
                                      void **current, size_t *clen);

/* *all = whether every one of the nkeys keys exists right now (no
 * waiting). nkeys 0 gives true. */
EM_API em_status em_store_check(em_store *s, const char *const *keys, size_t nkeys, bool *all);

/* Waits until every key exists. On timeout returns EM_ERR_TIMEOUT with a
 * message naming the keys still missing. timeout_ms as above. */
EM_API em_status em_store_wait(em_store *s, const char *const *keys, size_t nkeys,
                               int64_t timeout_ms);

/* Deletes key; *existed (may be NULL) says whether it was there. A
 * multi-key wait that already saw key still counts it as set; a get or
 * wait arriving later waits for a new set. */
EM_API em_status em_store_delete_key(em_store *s, const char *key, bool *existed);

/* *n = the number of keys in the store (for a prefix store: in its base
 * store, as PyTorch's PrefixStore). */
EM_API em_status em_store_num_keys(em_store *s, int64_t *n);

/* The store's default timeout for get/wait and for each request. A value
 * <= 0 or EM_STORE_DEFAULT_TIMEOUT is refused with EM_ERR_INVALID. */
EM_API em_status em_store_set_timeout(em_store *s, int64_t timeout_ms);
EM_API int64_t em_store_timeout(const em_store *s);

/* A new, independent handle to the same store (the TCP client opens a new
 * connection; a prefix store clones its base). Use it to give a thread its
 * own connection. NULL with EM_ERR_NOTIMPL if the store cannot be cloned. */
EM_API em_store *em_store_clone(em_store *s);

/* "tcp", "prefix", or the name of a custom store's ops. */
EM_API const char *em_store_kind(const em_store *s);

/* Adds a reference (for another owner, e.g. a process group keeping the
 * store it bootstrapped from); returns s. NULL is a no-op. Thread-safe. */
EM_API em_store *em_store_retain(em_store *s);
/* Drops a reference; the last one closes the store (and, for a store made
 * by em_store_tcp_create as the server, stops the server: other processes'
 * clients then get EM_ERR_COMM). NULL is a no-op. */
EM_API void em_store_release(em_store *s);

/* Frees a value returned by get or compare_set. NULL is a no-op. */
EM_API void em_store_free(void *value);

/* ---- the TCP client ---------------------------------------------------------- */

/* Options for a TCP client; zero-initialised fields take the defaults, and
 * a NULL options pointer means all defaults. */
typedef struct em_store_options {
  /* Default timeout of every call (get, wait, and each request's round
   * trip). 0 = EM_STORE_DEFAULT_TIMEOUT_MS (30 min). */
  int64_t timeout_ms;
  /* How long em_store_tcp_connect keeps retrying while the server is not
   * up yet (connection refused, handshake cut off). 0 = timeout_ms. */
  int64_t connect_timeout_ms;
  /* The job's secret. NULL = read EMBER_STORE_SECRET; "" (or the variable
   * unset or empty) = no secret, which only a server without a secret
   * accepts. */
  const char *secret;
} em_store_options;

/* Connects to the store server at host:port (a name or a numeric IPv4/IPv6
 * address). While nothing listens there yet it retries with exponential
 * backoff (10 ms doubling to 1 s, with jitter) until connect_timeout_ms:
 * then EM_ERR_TIMEOUT naming host:port and the last error. A server that
 * refuses our secret is EM_ERR_COMM "store: authentication failed: wrong
 * or missing EMBER_STORE_SECRET" at once (no retrying). Returns a new
 * reference, or NULL. */
EM_API em_store *em_store_tcp_connect(const char *host, int port, const em_store_options *opts);

/* The no-launcher convenience (PyTorch's TCPStore(host, port, is_master)):
 * with is_server, starts a store server in this process (its own thread)
 * listening on port — on host if host is a numeric address, else on all
 * interfaces, since a name may resolve to an address other nodes cannot
 * reach — and connects to it; otherwise only connects. The server takes
 * its secret from opts->secret / EMBER_STORE_SECRET like the client. The
 * server lives as long as the returned store: releasing it on the server
 * rank cuts every other rank off, so keep it until the job is done. port 0
 * with is_server picks a free port (em_store_tcp_port tells which). */
EM_API em_store *em_store_tcp_create(const char *host, int port, bool is_server,
                                     const em_store_options *opts);

/* The server port a TCP client is connected to; -1 for other stores. */
EM_API int em_store_tcp_port(const em_store *s);

/* ---- the TCP server ----------------------------------------------------------- */

typedef struct em_store_server_options {
  /* NULL = read EMBER_STORE_SECRET; "" (or unset/empty variable) = accept
   * clients without authentication. */
  const char *secret;
  /* A new connection that has not authenticated within this time is
   * closed (and the refusal logged). 0 = 10 s. */
  int64_t auth_timeout_ms;
  /* Receives each log line (refused clients, malformed frames), without a
   * trailing newline, on the server's loop thread. NULL = one line on
   * stderr, prefixed "[ember store] ". */
  void (*log)(void *log_ctx, const char *line);
  void *log_ctx;
} em_store_server_options;

/* Starts a server on its own thread and libuv loop, listening on host:port
 * (numeric address or name; "0.0.0.0" for all interfaces; port 0 = a free
 * port, see em_store_server_port). The socket is bound before this
 * returns, so clients may connect at once. Returns NULL with EM_ERR_COMM
 * naming the address if it cannot listen (e.g. address already in use). */
EM_API em_store_server *em_store_server_start(const char *host, int port,
                                              const em_store_server_options *opts);

/* The same, but served by the caller's libuv loop (a uv_loop_t*; declared
 * through its struct tag so this header does not need uv.h). Every call on an
 * attached server — including stop and destroy — must be made on the
 * loop's thread. The server's handles keep the loop alive until the server
 * is stopped. libuv writes with write(2), so a client vanishing mid-answer
 * raises SIGPIPE in the loop's thread: if SIGPIPE is at its default
 * (terminate) attach sets it to ignored (processes spawned through libuv
 * start with default dispositions again). A started server blocks SIGPIPE
 * in its own thread instead and changes nothing process-wide. */
struct uv_loop_s;
EM_API em_store_server *em_store_server_attach(struct uv_loop_s *loop, const char *host, int port,
                                               const em_store_server_options *opts);

/* The port the server listens on (useful after port 0). */
EM_API int em_store_server_port(const em_store_server *srv);

/* Number of connected clients (authenticated or not). */
EM_API int em_store_server_num_clients(const em_store_server *srv);

/* Stops serving: closes the listening socket and every connection (their
 * clients get EM_ERR_COMM; parked gets/waits are answered by the broken
 * connection), and calls pending watch callbacks with EM_ERR_STATE. A
 * started server's thread is joined before this returns; an attached one
 * finishes closing its handles as the caller's loop runs on. The keys stay
 * readable with em_store_server_get until destroy. Idempotent. Never call
 * it on a started server's own thread (from its log callback): it joins
 * that thread. */
EM_API void em_store_server_stop(em_store_server *srv);

/* Stops (if needed) and frees the server. For an attached server the
 * memory is released by the loop once its handles are closed: keep running
 * the loop (uv_run) after destroy until it returns. NULL is a no-op. */
EM_API void em_store_server_destroy(em_store_server *srv);

/* Direct access for the process hosting an attached server (the launcher
 * cannot block its own loop on a client of itself). Call these on the
 * loop's thread only; for a started server use a client. They never block.
 *
 * set/add/delete_key behave as the store operations (and wake waiters);
 * get copies the value (free with em_store_free) into *value, *len and sets
 * *found, returning EM_OK with *found false when the key is missing. */
EM_API em_status em_store_server_set(em_store_server *srv, const char *key, const void *value,
                                     size_t len);
EM_API em_status em_store_server_get(em_store_server *srv, const char *key, void **value,
                                     size_t *len, bool *found);
EM_API em_status em_store_server_add(em_store_server *srv, const char *key, int64_t delta,
                                     int64_t *result);
EM_API em_status em_store_server_delete_key(em_store_server *srv, const char *key,
                                            bool *existed);
EM_API int64_t em_store_server_num_keys(const em_store_server *srv);

/* Calls cb(srv, EM_OK, ctx) on the loop thread once every key exists — at
 * once, before watch returns, if they already do — or cb(srv,
 * EM_ERR_STATE, ctx) if the server stops first. *id (may be NULL)
 * receives a handle for em_store_server_unwatch. */
typedef void (*em_store_watch_cb)(em_store_server *srv, em_status st, void *ctx);
EM_API em_status em_store_server_watch(em_store_server *srv, const char *const *keys,
                                       size_t nkeys, em_store_watch_cb cb, void *ctx,
                                       uint64_t *id);
/* Drops a pending watch without calling it; false if it already fired or
 * was never there. */
EM_API bool em_store_server_unwatch(em_store_server *srv, uint64_t id);

/* ---- the prefix store ----------------------------------------------------------- */

/* A store whose every key k is stored in base as "prefix/k", so separate
 * jobs, groups or restarts can share one server without colliding. Holds
 * its own reference to base (the caller keeps theirs). Prefixes nest. It
 * starts with base's timeout and then has its own (em_store_set_timeout);
 * its calls go through base's connection (and its mutex).
 * Returns a new reference, or NULL (EM_ERR_INVALID for a NULL base or
 * prefix). */
EM_API em_store *em_store_prefix_create(em_store *base, const char *prefix);

/* ---- writing a store -------------------------------------------------------------
 *
 * A store is a struct of function pointers plus a context. The generic
 * functions above validate arguments (non-NULL, key and value limits) and
 * resolve EM_STORE_DEFAULT_TIMEOUT into a number of ms before calling,
 * so an implementation only does the work. Each returns em_status and sets
 * the error on failure; get/compare_set return malloc'd values (with the
 * extra NUL, see em_store_get) that the caller frees with em_store_free.
 */
typedef struct em_store_ops {
  const char *name;
  em_status (*set)(void *ctx, const char *key, const void *value, size_t len,
                   int64_t timeout_ms);
  em_status (*get)(void *ctx, const char *key, int64_t timeout_ms, void **value, size_t *len);
  em_status (*add)(void *ctx, const char *key, int64_t delta, int64_t timeout_ms,
                   int64_t *result);
  em_status (*compare_set)(void *ctx, const char *key, const void *expected, size_t elen,
                           const void *desired, size_t dlen, int64_t timeout_ms, void **current,
                           size_t *clen);
  em_status (*check)(void *ctx, const char *const *keys, size_t nkeys, int64_t timeout_ms,
                     bool *all);
  em_status (*wait)(void *ctx, const char *const *keys, size_t nkeys, int64_t timeout_ms);
  em_status (*delete_key)(void *ctx, const char *key, int64_t timeout_ms, bool *existed);
  em_status (*num_keys)(void *ctx, int64_t timeout_ms, int64_t *n);
  /* Optional (NULL: em_store_clone fails with EM_ERR_NOTIMPL). */
  em_store *(*clone)(void *ctx);
  /* Frees ctx; called once, by the last em_store_release. */
  void (*destroy)(void *ctx);
} em_store_ops;

/* Wraps ops + ctx into a store with one reference and the default timeout.
 * ops must outlive the store. On failure (NULL) ops->destroy(ctx) has NOT
 * been called: ctx is still the caller's. */
EM_API em_store *em_store_create(const em_store_ops *ops, void *ctx);

/* The ctx given to em_store_create (for implementations that wrap a store
 * of their own kind). */
EM_API void *em_store_ctx(const em_store *s);

#ifdef __cplusplus
}
#endif
#endif
