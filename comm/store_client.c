/* The client side of the store: the generic em_store front end (argument
 * checks, timeouts, refcounting, dispatch through em_store_ops) and the
 * TCP client.
 *
 * The TCP client is a blocking socket guarded by a mutex: one request at a
 * time, each bounded by a deadline (poll). A get or wait that runs out of
 * time sends OP_CANCEL for the parked request and reads until the cancel's
 * answer, so the connection stays in step and usable; if the keys arrived
 * meanwhile the request's real answer wins. Any other failure (peer gone,
 * garbage, no answer) closes the socket and marks the client broken:
 * every later call fails at once with the reason.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "comm/store_impl.h"

/* ==== the generic front end ============================================== */

em_store *em_store_create(const em_store_ops *ops, void *ctx) {
  if (!ops || !ops->set || !ops->get || !ops->add || !ops->compare_set || !ops->check ||
      !ops->wait || !ops->delete_key || !ops->num_keys || !ops->destroy)
    return EM_FAIL(EM_ERR_INVALID, "store: create: ops is NULL or lacks a required function");
  em_store *s = calloc(1, sizeof *s);
  if (!s) return EM_FAIL(EM_ERR_NOMEM, "store: create: out of memory");
  s->refcount = 1;
  s->ops = ops;
  s->ctx = ctx;
  s->timeout_ms = EM_STORE_DEFAULT_TIMEOUT_MS;
  return s;
}

void *em_store_ctx(const em_store *s) { return s ? s->ctx : NULL; }

em_store *em_store_retain(em_store *s) {
  if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
  return s;
}

void em_store_release(em_store *s) {
  if (!s) return;
  if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  s->ops->destroy(s->ctx);
  free(s);
}

void em_store_free(void *value) { free(value); }

const char *em_store_kind(const em_store *s) { return s ? s->ops->name : "(null)"; }

int64_t em_store_timeout(const em_store *s) {
  return s ? __atomic_load_n(&s->timeout_ms, __ATOMIC_RELAXED) : EM_STORE_DEFAULT_TIMEOUT_MS;
}

em_status em_store_set_timeout(em_store *s, int64_t timeout_ms) {
  if (!s) return em__set_error(EM_ERR_INVALID, "store: set_timeout: store is NULL");
  if (timeout_ms <= 0)
    return em__set_error(EM_ERR_INVALID,
                         "store: set_timeout: timeout must be a positive number of ms, got %lld",
                         (long long)timeout_ms);
  __atomic_store_n(&s->timeout_ms, timeout_ms, __ATOMIC_RELAXED);
  return EM_OK;
}

em_store *em_store_clone(em_store *s) {
  if (!s) return EM_FAIL(EM_ERR_INVALID, "store: clone: store is NULL");
  if (!s->ops->clone)
    return EM_FAIL(EM_ERR_NOTIMPL, "store: clone: a %s store cannot be cloned", s->ops->name);
  em_store *c = s->ops->clone(s->ctx);
  if (c) __atomic_store_n(&c->timeout_ms, em_store_timeout(s), __ATOMIC_RELAXED);
  return c;
}

static em_status check_store_key(const char *op, const em_store *s, const char *key) {
  if (!s) return em__set_error(EM_ERR_INVALID, "store: %s: store is NULL", op);
  if (!key) return em__set_error(EM_ERR_INVALID, "store: %s: key is NULL", op);
  size_t n = strnlen(key, (size_t)EM_STORE_MAX_KEY + 1);
  if (n > EM_STORE_MAX_KEY)
    return em__set_error(EM_ERR_INVALID,
                         "store: %s: key of %zu bytes or more exceeds the %u-byte limit "
                         "(EM_STORE_MAX_KEY)",
                         op, n, EM_STORE_MAX_KEY);
  return EM_OK;
}

static em_status check_value(const char *op, const char *what, const void *v, size_t len) {
  if (!v && len)
    return em__set_error(EM_ERR_INVALID, "store: %s: %s is NULL but its length is %zu", op, what,
                         len);
  if (len > EM_STORE_MAX_VALUE)
    return em__set_error(EM_ERR_INVALID,
                         "store: %s: %s of %zu bytes exceeds the %u-byte limit "
                         "(EM_STORE_MAX_VALUE)",
                         op, what, len, EM_STORE_MAX_VALUE);
  return EM_OK;
}

static em_status check_keys(const char *op, const em_store *s, const char *const *keys,
                            size_t nkeys) {
  if (!s) return em__set_error(EM_ERR_INVALID, "store: %s: store is NULL", op);
  if (!keys && nkeys) return em__set_error(EM_ERR_INVALID, "store: %s: keys is NULL", op);
  if (nkeys > EM_STORE_MAX_KEYS)
    return em__set_error(EM_ERR_INVALID, "store: %s: %zu keys exceed the limit of %u keys", op,
                         nkeys, EM_STORE_MAX_KEYS);
  size_t total = 0;
  for (size_t i = 0; i < nkeys; i++) {
    if (!keys[i]) return em__set_error(EM_ERR_INVALID, "store: %s: keys[%zu] is NULL", op, i);
    EM_CHECK(check_store_key(op, s, keys[i]));
    total += strlen(keys[i]) + 8; /* + protobuf framing per key, generously */
  }
  if (total > EM__STORE_MAX_FRAME)
    return em__set_error(EM_ERR_INVALID,
                         "store: %s: %zu keys of %zu bytes in all exceed the %u-byte frame cap",
                         op, nkeys, total, EM__STORE_MAX_FRAME);
  return EM_OK;
}

static em_status resolve_timeout(const char *op, const em_store *s, int64_t t, int64_t *out) {
  if (t == EM_STORE_DEFAULT_TIMEOUT) {
    *out = em_store_timeout(s);
    return EM_OK;
  }
  if (t < 0)
    return em__set_error(EM_ERR_INVALID,
                         "store: %s: timeout must be >= 0 ms or EM_STORE_DEFAULT_TIMEOUT, got %lld",
                         op, (long long)t);
  *out = t;
  return EM_OK;
}

em_status em_store_set(em_store *s, const char *key, const void *value, size_t len) {
  EM_CHECK(check_store_key("set", s, key));
  EM_CHECK(check_value("set", "value", value, len));
  return s->ops->set(s->ctx, key, value, len, em_store_timeout(s));
}

em_status em_store_get_timeout(em_store *s, const char *key, int64_t timeout_ms, void **value,
                               size_t *len) {
  if (value) *value = NULL;
  if (len) *len = 0;
  EM_CHECK(check_store_key("get", s, key));
  if (!value || !len)
    return em__set_error(EM_ERR_INVALID, "store: get: value and len must not be NULL");
  int64_t t = 0;
  EM_CHECK(resolve_timeout("get", s, timeout_ms, &t));
  return s->ops->get(s->ctx, key, t, value, len);
}

em_status em_store_get(em_store *s, const char *key, void **value, size_t *len) {
  return em_store_get_timeout(s, key, EM_STORE_DEFAULT_TIMEOUT, value, len);
}

em_status em_store_add(em_store *s, const char *key, int64_t delta, int64_t *result) {
  EM_CHECK(check_store_key("add", s, key));
  int64_t r = 0;
  EM_CHECK(s->ops->add(s->ctx, key, delta, em_store_timeout(s), &r));
  if (result) *result = r;
  return EM_OK;
}

em_status em_store_compare_set(em_store *s, const char *key, const void *expected, size_t elen,
                               const void *desired, size_t dlen, void **current, size_t *clen) {
  if (current) *current = NULL;
  if (clen) *clen = 0;
  EM_CHECK(check_store_key("compare_set", s, key));
  EM_CHECK(check_value("compare_set", "expected", expected, elen));
  EM_CHECK(check_value("compare_set", "desired", desired, dlen));
  void *cur = NULL;
  size_t n = 0;
  EM_CHECK(s->ops->compare_set(s->ctx, key, expected, elen, desired, dlen, em_store_timeout(s),
                               &cur, &n));
  if (current) *current = cur;
  else free(cur);
  if (clen) *clen = n;
  return EM_OK;
}

em_status em_store_check(em_store *s, const char *const *keys, size_t nkeys, bool *all) {
  EM_CHECK(check_keys("check", s, keys, nkeys));
  if (!all) return em__set_error(EM_ERR_INVALID, "store: check: all must not be NULL");
  *all = false;
  return s->ops->check(s->ctx, keys, nkeys, em_store_timeout(s), all);
}

em_status em_store_wait(em_store *s, const char *const *keys, size_t nkeys, int64_t timeout_ms) {
  EM_CHECK(check_keys("wait", s, keys, nkeys));
  int64_t t = 0;
  EM_CHECK(resolve_timeout("wait", s, timeout_ms, &t));
  return s->ops->wait(s->ctx, keys, nkeys, t);
}

em_status em_store_delete_key(em_store *s, const char *key, bool *existed) {
  EM_CHECK(check_store_key("delete_key", s, key));
  bool e = false;
  EM_CHECK(s->ops->delete_key(s->ctx, key, em_store_timeout(s), &e));
  if (existed) *existed = e;
  return EM_OK;
}

em_status em_store_num_keys(em_store *s, int64_t *n) {
  if (!s) return em__set_error(EM_ERR_INVALID, "store: num_keys: store is NULL");
  if (!n) return em__set_error(EM_ERR_INVALID, "store: num_keys: n must not be NULL");
  return s->ops->num_keys(s->ctx, em_store_timeout(s), n);
}

/* ==== the TCP client ========================================================= */

/* How long a timed-out get/wait waits for the answer to its cancel before
 * declaring the server unresponsive, and the least time a request gets to
 * be sent. */
#define CANCEL_GRACE_MS 5000
#define SEND_MIN_MS 5000
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 1000

typedef struct tcp_client {
  pthread_mutex_t mu;
  int fd; /* -1 once broken */
  char host[256];
  int port;
  char *secret; /* NULL = none */
  int64_t connect_timeout_ms;
  uint64_t next_id;
  char broken[256]; /* why fd is -1 */
  em_store_server *server; /* owned (em_store_tcp_create on the server rank) */
} tcp_client;

static const em_store_ops tcp_ops;

static void tcp_break(tcp_client *c, const char *why) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  snprintf(c->broken, sizeof c->broken, "%s", why);
}

static int64_t deadline_after(int64_t ms) {
  int64_t now = em__store_now_ms();
  return ms > INT64_MAX - now ? INT64_MAX : now + ms;
}

static void set_sockopts(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* A server host that vanishes without a FIN (power loss, partition) is
   * noticed within about a minute instead of at the 30-minute timeout. */
  int idle = 30, intvl = 5, cnt = 6;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* One non-blocking connect attempt to ai before deadline: fd or -1 with
 * *err set. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *err) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
  if (errno != EINPROGRESS) {
    *err = errno;
    close(fd);
    return -1;
  }
  for (;;) {
    /* poll at least once even past the deadline: a refused loopback
     * connect completes at once and should report why */
    int64_t left = deadline - em__store_now_ms();
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, left > 1000 ? 1000 : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *err = errno;
      close(fd);
      return -1;
    }
    if (r == 0 && left == 0) {
      *err = ETIMEDOUT;
      close(fd);
      return -1;
    }
    if (r == 0) continue;
    int so = 0;
    socklen_t sl = sizeof so;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0) so = errno;
    if (so) {
      *err = so;
      close(fd);
      return -1;
    }
    return fd;
  }
}

typedef enum { HS_OK, HS_RETRY, HS_FATAL, HS_TIMEOUT } hs_result;

/* The challenge handshake on a fresh connection. On HS_RETRY/HS_TIMEOUT
 * `why` says what happened; on HS_FATAL the error is set. */
static hs_result handshake(tcp_client *c, int fd, int64_t deadline, char *why, size_t whysz) {
  uint8_t *body = NULL;
  size_t len = 0;
  int err = 0;
  hs_result res = HS_FATAL;
  Ember__Store__Hello *hello = NULL;
  Ember__Store__AuthResult *ar = NULL;
  uint8_t *frame = NULL;

  em__store_io io = em__store_recv_frame(fd, deadline, EM__STORE_MAX_AUTH_FRAME, &body, &len, &err);
  if (io == EM__IO_TIMEOUT) {
    snprintf(why, whysz, "the server did not greet us (no handshake)");
    res = HS_TIMEOUT;
    goto done;
  }
  if (io == EM__IO_CLOSED || io == EM__IO_ERROR) {
    snprintf(why, whysz, "handshake cut off: %s", em__store_io_str(io, err));
    res = HS_RETRY;
    goto done;
  }
  if (io != EM__IO_OK ||
      !(hello = ember__store__hello__unpack(NULL, len, body)) ||
      hello->challenge.len != EM__STORE_CHALLENGE_BYTES) {
    em__set_error(EM_ERR_COMM,
                  "store: %s:%d does not speak the ember store protocol (bad greeting)",
                  c->host, c->port);
    goto done;
  }
  if (hello->version != EM__STORE_PROTOCOL_VERSION) {
    em__set_error(EM_ERR_COMM,
                  "store: protocol version mismatch: server %s:%d speaks version %u, this "
                  "client %u",
                  c->host, c->port, hello->version, EM__STORE_PROTOCOL_VERSION);
    goto done;
  }
  uint8_t mac[EM__STORE_HMAC_BYTES];
  Ember__Store__Auth auth = EMBER__STORE__AUTH__INIT;
  auth.version = EM__STORE_PROTOCOL_VERSION;
  if (c->secret) {
    if (em__store_hmac(c->secret, hello->challenge.data, hello->challenge.len, mac) != 0) {
      em__set_error(EM_ERR_INTERNAL, "store: libsodium failed to initialise");
      goto done;
    }
    auth.hmac.data = mac;
    auth.hmac.len = sizeof mac;
  }
  size_t flen = 0;
  frame = em__store_frame_pack(&auth.base, &flen);
  if (!frame) {
    em__set_error(EM_ERR_NOMEM, "store: connect: out of memory");
    goto done;
  }
  io = em__store_send_all(fd, frame, flen, deadline, &err);
  if (io != EM__IO_OK) {
    snprintf(why, whysz, "handshake cut off: %s", em__store_io_str(io, err));
    res = io == EM__IO_TIMEOUT ? HS_TIMEOUT : HS_RETRY;
    goto done;
  }
  free(body);
  body = NULL;
  io = em__store_recv_frame(fd, deadline, EM__STORE_MAX_AUTH_FRAME, &body, &len, &err);
  if (io == EM__IO_TIMEOUT) {
    snprintf(why, whysz, "no answer to our authentication");
    res = HS_TIMEOUT;
    goto done;
  }
  if (io == EM__IO_CLOSED || io == EM__IO_ERROR) {
    snprintf(why, whysz, "handshake cut off: %s", em__store_io_str(io, err));
    res = HS_RETRY;
    goto done;
  }
  if (io != EM__IO_OK || !(ar = ember__store__auth_result__unpack(NULL, len, body))) {
    em__set_error(EM_ERR_COMM, "store: %s:%d sent a malformed authentication result", c->host,
                  c->port);
    goto done;
  }
  if (!ar->ok) {
    if (hello->auth_required)
      em__set_error(EM_ERR_COMM,
                    "store: authentication failed: wrong or missing " EM_STORE_SECRET_ENV
                    " (server %s:%d refused this client%s)",
                    c->host, c->port, c->secret ? "'s secret" : ", which has no secret");
    else
      em__set_error(EM_ERR_COMM, "store: server %s:%d refused the connection: %s", c->host,
                    c->port, ar->error ? ar->error : "");
    goto done;
  }
  res = HS_OK;
done:
  if (hello) ember__store__hello__free_unpacked(hello, NULL);
  if (ar) ember__store__auth_result__free_unpacked(ar, NULL);
  free(body);
  free(frame);
  return res;
}

/* Connects c->fd, retrying with backoff until the connect timeout. */
static em_status tcp_open(tcp_client *c) {
  int64_t start = em__store_now_ms();
  int64_t deadline = deadline_after(c->connect_timeout_ms);
  int64_t backoff = BACKOFF_FIRST_MS;
  char last[256] = "no attempt made";
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", c->port);
  if (em__store_crypto_init() != 0)
    return em__set_error(EM_ERR_INTERNAL, "store: libsodium failed to initialise");

  for (;;) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(c->host, portstr, &hints, &res);
    if (gai != 0 && gai != EAI_AGAIN)
      return em__set_error(EM_ERR_COMM, "store: cannot resolve host '%s': %s", c->host,
                           gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
    if (gai == EAI_AGAIN) snprintf(last, sizeof last, "%s", gai_strerror(gai));
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      int err = 0;
      int fd = connect_one(ai, deadline, &err);
      if (fd < 0) {
        snprintf(last, sizeof last, "%s", strerror(err));
        continue;
      }
      set_sockopts(fd);
      em_clear_error();
      hs_result hs = handshake(c, fd, deadline, last, sizeof last);
      if (hs == HS_OK) {
        freeaddrinfo(res);
        c->fd = fd;
        c->broken[0] = '\0';
        return EM_OK;
      }
      close(fd);
      if (hs == HS_FATAL) {
        freeaddrinfo(res);
        return em_last_status() ? em_last_status() : EM_ERR_COMM;
      }
    }
    if (res) freeaddrinfo(res);
    int64_t now = em__store_now_ms();
    if (now >= deadline)
      return em__set_error(EM_ERR_TIMEOUT,
                           "store: could not connect to %s:%d within %lld ms (last error: %s)",
                           c->host, c->port, (long long)(now - start), last);
    /* Exponential backoff with jitter in [backoff/2, backoff] so that a
     * thousand ranks started together do not knock in lockstep. */
    int64_t sleep_ms = backoff / 2 + (int64_t)randombytes_uniform((uint32_t)(backoff / 2 + 1));
    if (sleep_ms > deadline - now) sleep_ms = deadline - now;
    struct timespec ts = {.tv_sec = sleep_ms / 1000, .tv_nsec = (sleep_ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
}

static void tcp_free(tcp_client *c) {
  if (!c) return;
  if (c->fd >= 0) close(c->fd);
  pthread_mutex_destroy(&c->mu);
  if (c->secret) {
    sodium_memzero(c->secret, strlen(c->secret));
    free(c->secret);
  }
  em_store_server_destroy(c->server);
  free(c);
}

static tcp_client *tcp_client_new(const char *host, int port, const char *secret,
                                  int64_t connect_timeout_ms) {
  tcp_client *c = calloc(1, sizeof *c);
  if (!c) return EM_FAIL(EM_ERR_NOMEM, "store: connect: out of memory");
  c->fd = -1;
  pthread_mutex_init(&c->mu, NULL);
  snprintf(c->host, sizeof c->host, "%s", host);
  c->port = port;
  c->connect_timeout_ms = connect_timeout_ms;
  if (secret && !(c->secret = strdup(secret))) {
    tcp_free(c);
    return EM_FAIL(EM_ERR_NOMEM, "store: connect: out of memory");
  }
  return c;
}

static em_store *tcp_wrap(tcp_client *c, int64_t timeout_ms) {
  em_store *s = em_store_create(&tcp_ops, c);
  if (!s) {
    tcp_free(c);
    return NULL;
  }
  s->timeout_ms = timeout_ms;
  return s;
}

static em_status check_options(const char *op, const char *host, int port,
                               const em_store_options *opts, int64_t *timeout,
                               int64_t *connect_timeout) {
  if (!host || !host[0]) return em__set_error(EM_ERR_INVALID, "store: %s: host is empty", op);
  if (strlen(host) >= 256)
    return em__set_error(EM_ERR_INVALID, "store: %s: host name is too long", op);
  if (port < 0 || port > 65535)
    return em__set_error(EM_ERR_INVALID, "store: %s: port %d is not in [0, 65535]", op, port);
  em_store_options o = opts ? *opts : (em_store_options){0};
  if (o.timeout_ms < 0 || o.connect_timeout_ms < 0)
    return em__set_error(EM_ERR_INVALID,
                         "store: %s: timeouts must be >= 0 ms (0 = default), got timeout_ms "
                         "%lld, connect_timeout_ms %lld",
                         op, (long long)o.timeout_ms, (long long)o.connect_timeout_ms);
  *timeout = o.timeout_ms ? o.timeout_ms : EM_STORE_DEFAULT_TIMEOUT_MS;
  *connect_timeout = o.connect_timeout_ms ? o.connect_timeout_ms : *timeout;
  return EM_OK;
}

em_store *em_store_tcp_connect(const char *host, int port, const em_store_options *opts) {
  int64_t timeout = 0, ctimeout = 0;
  if (check_options("connect", host, port, opts, &timeout, &ctimeout)) return NULL;
  if (port == 0) return EM_FAIL(EM_ERR_INVALID, "store: connect: port 0 is not a server port");
  tcp_client *c = tcp_client_new(host, port, em__store_secret(opts ? opts->secret : NULL), ctimeout);
  if (!c) return NULL;
  if (tcp_open(c) != EM_OK) {
    tcp_free(c);
    return NULL;
  }
  return tcp_wrap(c, timeout);
}

static bool is_numeric_host(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

em_store *em_store_tcp_create(const char *host, int port, bool is_server,
                              const em_store_options *opts) {
  if (!is_server) return em_store_tcp_connect(host, port, opts);
  int64_t timeout = 0, ctimeout = 0;
  if (check_options("create", host, port, opts, &timeout, &ctimeout)) return NULL;
  bool numeric = is_numeric_host(host);
  em_store_server_options so = {.secret = opts ? opts->secret : NULL};
  em_store_server *srv = em_store_server_start(numeric ? host : "0.0.0.0", port, &so);
  if (!srv) return NULL;
  const char *chost = numeric ? host : "127.0.0.1";
  if (numeric && (!strcmp(host, "0.0.0.0") || !strcmp(host, "::")))
    chost = strcmp(host, "::") ? "127.0.0.1" : "::1";
  tcp_client *c = tcp_client_new(chost, em_store_server_port(srv),
                                 em__store_secret(opts ? opts->secret : NULL), ctimeout);
  if (!c) {
    em_store_server_destroy(srv);
    return NULL;
  }
  c->server = srv;
  if (tcp_open(c) != EM_OK) {
    tcp_free(c);
    return NULL;
  }
  return tcp_wrap(c, timeout);
}

int em_store_tcp_port(const em_store *s) {
  if (!s || s->ops != &tcp_ops) return -1;
  return ((const tcp_client *)s->ctx)->port;
}

/* ---- requests ---- */

static const char *op_name(Ember__Store__Op op) {
  switch (op) {
    case EMBER__STORE__OP__OP_SET: return "set";
    case EMBER__STORE__OP__OP_GET: return "get";
    case EMBER__STORE__OP__OP_ADD: return "add";
    case EMBER__STORE__OP__OP_COMPARE_SET: return "compare_set";
    case EMBER__STORE__OP__OP_CHECK: return "check";
    case EMBER__STORE__OP__OP_WAIT: return "wait";
    case EMBER__STORE__OP__OP_DELETE: return "delete_key";
    case EMBER__STORE__OP__OP_NUM_KEYS: return "num_keys";
    case EMBER__STORE__OP__OP_CANCEL: return "cancel";
    case EMBER__STORE__OP__OP_PING: return "ping";
    default: return "request";
  }
}

/* Appends "'k1', 'k2', ... and N more" to buf. */
static void keys_list(char *buf, size_t size, size_t n, const ProtobufCBinaryData *keys) {
  size_t o = strlen(buf);
  for (size_t i = 0; i < n && o + 1 < size; i++) {
    char r[EM__KEY_REPR_MAX];
    em__store_key_repr(keys[i].data, keys[i].len, r, sizeof r);
    if (i >= 8) {
      snprintf(buf + o, size - o, " and %zu more", n - i);
      return;
    }
    int k = snprintf(buf + o, size - o, "%s%s", i ? ", " : "", r);
    if (k < 0) return;
    o += (size_t)k;
  }
}

static em_status timeout_error(tcp_client *c, const Ember__Store__Request *req,
                               int64_t timeout_ms, const Ember__Store__Response *canceled) {
  char list[700] = "";
  size_t n = canceled ? canceled->n_missing : req->n_keys;
  const ProtobufCBinaryData *k = canceled ? canceled->missing : req->keys;
  keys_list(list, sizeof list, n, k);
  if (req->op == EMBER__STORE__OP__OP_GET)
    return em__set_error(EM_ERR_TIMEOUT,
                         "store: get: timed out after %lld ms waiting for key %s (server %s:%d)",
                         (long long)timeout_ms, list, c->host, c->port);
  return em__set_error(EM_ERR_TIMEOUT,
                       "store: wait: timed out after %lld ms; %zu of %zu keys not set: %s "
                       "(server %s:%d)",
                       (long long)timeout_ms, n, req->n_keys, list, c->host, c->port);
}

/* Breaks the connection and reports why, naming op and server. */
static em_status lost(tcp_client *c, const char *op, const char *why) {
  char reason[200];
  snprintf(reason, sizeof reason, "%s", why);
  tcp_break(c, reason);
  return em__set_error(EM_ERR_COMM, "store: %s: lost connection to server %s:%d (%s)", op,
                       c->host, c->port, reason);
}

/* Receives one response before deadline. On failure the connection is
 * broken and the error set; *timed_out distinguishes the timeout. */
static em_status recv_response(tcp_client *c, const char *op, int64_t deadline,
                               Ember__Store__Response **out, bool *timed_out) {
  uint8_t *body = NULL;
  size_t len = 0;
  int err = 0;
  *out = NULL;
  *timed_out = false;
  em__store_io io = em__store_recv_frame(c->fd, deadline, EM__STORE_MAX_FRAME, &body, &len, &err);
  if (io == EM__IO_TIMEOUT) {
    *timed_out = true;
    return EM_ERR_TIMEOUT;
  }
  if (io != EM__IO_OK) return lost(c, op, em__store_io_str(io, err));
  *out = ember__store__response__unpack(NULL, len, body);
  free(body);
  if (!*out) return lost(c, op, "malformed response");
  return EM_OK;
}

/* Sends req and returns its response (the caller frees it). With
 * `cancelable`, running out of time cancels the parked request on the
 * server and keeps the connection; otherwise the connection is broken.
 * Holds c->mu. */
static em_status rpc(tcp_client *c, Ember__Store__Request *req, int64_t timeout_ms,
                     bool cancelable, Ember__Store__Response **out) {
  const char *op = op_name(req->op);
  em_status st = EM_OK;
  uint8_t *frame = NULL;
  size_t flen = 0;
  int err = 0;
  Ember__Store__Response *resp = NULL, *canceled = NULL, *late = NULL;
  *out = NULL;

  if (c->fd < 0)
    return em__set_error(EM_ERR_COMM,
                         "store: %s: the connection to server %s:%d was lost earlier (%s); "
                         "connect again",
                         op, c->host, c->port, c->broken);
  req->id = ++c->next_id;
  frame = em__store_frame_pack(&req->base, &flen);
  if (!frame) return em__set_error(EM_ERR_NOMEM, "store: %s: out of memory", op);
  if (flen - 4 > EM__STORE_MAX_FRAME) {
    st = em__set_error(EM_ERR_INVALID, "store: %s: request of %zu bytes exceeds the %u-byte frame cap",
                       op, flen - 4, EM__STORE_MAX_FRAME);
    goto done;
  }
  em__store_io io = em__store_send_all(c->fd, frame, flen,
                                       deadline_after(timeout_ms > SEND_MIN_MS ? timeout_ms
                                                                               : SEND_MIN_MS),
                                       &err);
  if (io == EM__IO_TIMEOUT) {
    tcp_break(c, "timed out sending a request");
    st = em__set_error(EM_ERR_TIMEOUT, "store: %s: timed out sending to server %s:%d", op,
                       c->host, c->port);
    goto done;
  }
  if (io != EM__IO_OK) {
    st = lost(c, op, em__store_io_str(io, err));
    goto done;
  }

  /* wait for the answer (timeout 0 with `cancelable` = cancel at once) */
  int64_t deadline = deadline_after(timeout_ms);
  for (;;) {
    bool to = false;
    st = recv_response(c, op, deadline, &resp, &to);
    if (st == EM_OK && resp->id == req->id) goto done;
    if (st == EM_OK) { /* an answer to a request we gave up on: drop it */
      ember__store__response__free_unpacked(resp, NULL);
      resp = NULL;
      continue;
    }
    if (!to) goto done;
    break;
  }
  if (!cancelable) {
    tcp_break(c, "the server did not answer in time");
    st = em__set_error(EM_ERR_TIMEOUT, "store: %s: no answer from server %s:%d within %lld ms",
                       op, c->host, c->port, (long long)timeout_ms);
    goto done;
  }

  /* cancel the parked request and read until the cancel is answered */
  Ember__Store__Request cancel = EMBER__STORE__REQUEST__INIT;
  cancel.op = EMBER__STORE__OP__OP_CANCEL;
  cancel.id = ++c->next_id;
  cancel.cancel_id = req->id;
  free(frame);
  frame = em__store_frame_pack(&cancel.base, &flen);
  if (!frame) {
    tcp_break(c, "out of memory while canceling a request");
    st = timeout_error(c, req, timeout_ms, NULL);
    goto done;
  }
  int64_t grace = deadline_after(CANCEL_GRACE_MS);
  io = em__store_send_all(c->fd, frame, flen, grace, &err);
  if (io != EM__IO_OK) {
    tcp_break(c, em__store_io_str(io, err));
    st = timeout_error(c, req, timeout_ms, NULL);
    goto done;
  }
  for (;;) {
    bool to = false;
    Ember__Store__Response *r = NULL;
    if (recv_response(c, "cancel", grace, &r, &to) != EM_OK) {
      if (to) tcp_break(c, "the server did not answer a cancel in time");
      st = timeout_error(c, req, timeout_ms, canceled);
      goto done;
    }
    if (r->id == req->id) {
      if (r->code == EMBER__STORE__CODE__CODE_CANCELED) {
        if (canceled) ember__store__response__free_unpacked(canceled, NULL);
        canceled = r;
      } else {
        if (late) ember__store__response__free_unpacked(late, NULL);
        late = r; /* the keys arrived before the cancel did */
      }
    } else if (r->id == cancel.id) {
      ember__store__response__free_unpacked(r, NULL);
      break;
    } else {
      ember__store__response__free_unpacked(r, NULL);
    }
  }
  if (late) {
    resp = late;
    late = NULL;
    st = EM_OK;
  } else {
    st = timeout_error(c, req, timeout_ms, canceled);
  }

done:
  if (st == EM_OK && resp && resp->code != EMBER__STORE__CODE__CODE_OK) {
    st = em__set_error(EM_ERR_INVALID, "store: %s: %s", op,
                       resp->error && resp->error[0] ? resp->error : "the server refused the request");
    ember__store__response__free_unpacked(resp, NULL);
    resp = NULL;
  }
  if (st == EM_OK) *out = resp;
  else if (resp) ember__store__response__free_unpacked(resp, NULL);
  if (canceled) ember__store__response__free_unpacked(canceled, NULL);
  if (late) ember__store__response__free_unpacked(late, NULL);
  free(frame);
  return st;
}

static ProtobufCBinaryData bytes_of(const void *p, size_t n) {
  return (ProtobufCBinaryData){.len = n, .data = (uint8_t *)(uintptr_t)p};
}

static em_status tcp_call(tcp_client *c, Ember__Store__Request *req, int64_t timeout_ms,
                          bool cancelable, Ember__Store__Response **out) {
  pthread_mutex_lock(&c->mu);
  em_status st = rpc(c, req, timeout_ms, cancelable, out);
  pthread_mutex_unlock(&c->mu);
  return st;
}

static em_status tcp_set(void *ctx, const char *key, const void *value, size_t len,
                         int64_t timeout_ms) {
  ProtobufCBinaryData k = bytes_of(key, strlen(key));
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_SET;
  req.n_keys = 1;
  req.keys = &k;
  req.value = bytes_of(value, len);
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, false, &r));
  ember__store__response__free_unpacked(r, NULL);
  return EM_OK;
}

static em_status take_value(Ember__Store__Response *r, void **value, size_t *len) {
  *value = em__store_dup_value(r->value.data, r->value.len);
  *len = *value ? r->value.len : 0;
  size_t n = r->value.len;
  ember__store__response__free_unpacked(r, NULL);
  if (!*value) return em__set_error(EM_ERR_NOMEM, "store: out of memory for a %zu-byte value", n);
  return EM_OK;
}

static em_status tcp_get(void *ctx, const char *key, int64_t timeout_ms, void **value,
                         size_t *len) {
  ProtobufCBinaryData k = bytes_of(key, strlen(key));
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_GET;
  req.n_keys = 1;
  req.keys = &k;
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, true, &r));
  return take_value(r, value, len);
}

static em_status tcp_add(void *ctx, const char *key, int64_t delta, int64_t timeout_ms,
                         int64_t *result) {
  ProtobufCBinaryData k = bytes_of(key, strlen(key));
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_ADD;
  req.n_keys = 1;
  req.keys = &k;
  req.delta = delta;
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, false, &r));
  *result = r->number;
  ember__store__response__free_unpacked(r, NULL);
  return EM_OK;
}

static em_status tcp_compare_set(void *ctx, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, int64_t timeout_ms,
                                 void **current, size_t *clen) {
  ProtobufCBinaryData k = bytes_of(key, strlen(key));
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_COMPARE_SET;
  req.n_keys = 1;
  req.keys = &k;
  req.value = bytes_of(expected, elen);
  req.desired = bytes_of(desired, dlen);
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, false, &r));
  return take_value(r, current, clen);
}

/* Request keys for check/wait: views of the caller's strings. */
static ProtobufCBinaryData *keys_of(const char *const *keys, size_t n) {
  ProtobufCBinaryData *k = calloc(n ? n : 1, sizeof *k);
  if (!k) return NULL;
  for (size_t i = 0; i < n; i++) k[i] = bytes_of(keys[i], strlen(keys[i]));
  return k;
}

static em_status tcp_check(void *ctx, const char *const *keys, size_t nkeys, int64_t timeout_ms,
                           bool *all) {
  ProtobufCBinaryData *k = keys_of(keys, nkeys);
  if (!k) return em__set_error(EM_ERR_NOMEM, "store: check: out of memory");
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_CHECK;
  req.n_keys = nkeys;
  req.keys = k;
  Ember__Store__Response *r = NULL;
  em_status st = tcp_call(ctx, &req, timeout_ms, false, &r);
  free(k);
  if (st) return st;
  *all = r->flag;
  ember__store__response__free_unpacked(r, NULL);
  return EM_OK;
}

static em_status tcp_wait(void *ctx, const char *const *keys, size_t nkeys, int64_t timeout_ms) {
  if (nkeys == 0) return EM_OK;
  ProtobufCBinaryData *k = keys_of(keys, nkeys);
  if (!k) return em__set_error(EM_ERR_NOMEM, "store: wait: out of memory");
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_WAIT;
  req.n_keys = nkeys;
  req.keys = k;
  Ember__Store__Response *r = NULL;
  em_status st = tcp_call(ctx, &req, timeout_ms, true, &r);
  free(k);
  if (r) ember__store__response__free_unpacked(r, NULL);
  return st;
}

static em_status tcp_delete_key(void *ctx, const char *key, int64_t timeout_ms, bool *existed) {
  ProtobufCBinaryData k = bytes_of(key, strlen(key));
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_DELETE;
  req.n_keys = 1;
  req.keys = &k;
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, false, &r));
  *existed = r->flag;
  ember__store__response__free_unpacked(r, NULL);
  return EM_OK;
}

static em_status tcp_num_keys(void *ctx, int64_t timeout_ms, int64_t *n) {
  Ember__Store__Request req = EMBER__STORE__REQUEST__INIT;
  req.op = EMBER__STORE__OP__OP_NUM_KEYS;
  Ember__Store__Response *r = NULL;
  EM_CHECK(tcp_call(ctx, &req, timeout_ms, false, &r));
  *n = r->number;
  ember__store__response__free_unpacked(r, NULL);
  return EM_OK;
}

static em_store *tcp_clone(void *ctx) {
  tcp_client *c = ctx;
  tcp_client *n = tcp_client_new(c->host, c->port, c->secret, c->connect_timeout_ms);
  if (!n) return NULL;
  if (tcp_open(n) != EM_OK) {
    tcp_free(n);
    return NULL;
  }
  return tcp_wrap(n, EM_STORE_DEFAULT_TIMEOUT_MS);
}

static void tcp_destroy(void *ctx) { tcp_free(ctx); }

static const em_store_ops tcp_ops = {
    .name = "tcp",
    .set = tcp_set,
    .get = tcp_get,
    .add = tcp_add,
    .compare_set = tcp_compare_set,
    .check = tcp_check,
    .wait = tcp_wait,
    .delete_key = tcp_delete_key,
    .num_keys = tcp_num_keys,
    .clone = tcp_clone,
    .destroy = tcp_destroy,
};
