/* The store's wire: length-prefixed protobuf frames (an incremental reader
 * for the server's event loop, blocking deadline-bound I/O for the
 * client), HMAC challenge authentication, and small shared helpers. */
#include <errno.h>
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

/* ---- framing ------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

uint8_t *em__store_frame_pack(const ProtobufCMessage *msg, size_t *frame_len) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  if (n > UINT32_MAX) return NULL;
  uint8_t *buf = malloc(4 + n);
  if (!buf) return NULL;
  put_be32(buf, (uint32_t)n);
  size_t packed = protobuf_c_message_pack(msg, buf + 4);
  assert(packed == n);
  (void)packed;
  *frame_len = 4 + n;
  return buf;
}

void em__store_reader_reset(em__store_reader *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

em__store_read_result em__store_reader_feed(em__store_reader *r, const uint8_t **p, size_t *n,
                                            size_t cap, uint8_t **body, size_t *len) {
  while (*n > 0 || (r->hdr_got == 4 && r->got == r->len)) {
    if (r->hdr_got < 4) {
      size_t take = 4 - r->hdr_got;
      if (take > *n) take = *n;
      memcpy(r->hdr + r->hdr_got, *p, take);
      r->hdr_got += take;
      *p += take;
      *n -= take;
      if (r->hdr_got < 4) return EM__READ_MORE;
      r->len = get_be32(r->hdr);
      r->got = 0;
      if (r->len > cap) {
        *len = r->len;
        return EM__READ_TOO_BIG;
      }
      /* +1 so a zero-length frame still gets a non-NULL buffer */
      r->body = malloc(r->len + 1);
      if (!r->body) return EM__READ_NOMEM;
    }
    size_t take = r->len - r->got;
    if (take > *n) take = *n;
    if (take) memcpy(r->body + r->got, *p, take);
    r->got += take;
    *p += take;
    *n -= take;
    if (r->got == r->len) {
      *body = r->body;
      *len = r->len;
      r->body = NULL;
      r->hdr_got = 0;
      r->len = r->got = 0;
      return EM__READ_FRAME;
    }
  }
  return EM__READ_MORE;
}

/* ---- blocking I/O ------------------------------------------------------------- */

int64_t em__store_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline, int *err) {
  for (;;) {
    int64_t left = deadline - em__store_now_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {.fd = fd, .events = events};
    int r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
    if (r > 0) return 1; /* POLLHUP/POLLERR surface in the following read/write */
    if (r < 0 && errno != EINTR) {
      *err = errno;
      return -1;
    }
  }
}

em__store_io em__store_send_all(int fd, const void *buf, size_t len, int64_t deadline, int *err) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      p += w;
      len -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int r = wait_fd(fd, POLLOUT, deadline, err);
      if (r == 0) return EM__IO_TIMEOUT;
      if (r < 0) return EM__IO_ERROR;
      continue;
    }
    *err = w < 0 ? errno : EPIPE;
    return (*err == EPIPE || *err == ECONNRESET) ? EM__IO_CLOSED : EM__IO_ERROR;
  }
  return EM__IO_OK;
}

/* Reads len bytes. Until the first byte arrives the deadline applies; after
 * that the stream is committed to this frame, so the rest only has to keep
 * moving: STALL_MS without progress is an error (not a timeout, which
 * would leave the stream out of step). *started tracks "first byte seen"
 * across calls for one frame. */
#define STALL_MS 10000

static em__store_io recv_all(int fd, void *buf, size_t len, int64_t deadline, bool *started,
                             int *err) {
  uint8_t *p = buf;
  int64_t stall = em__store_now_ms() + STALL_MS;
  while (len > 0) {
    ssize_t r = recv(fd, p, len, MSG_DONTWAIT);
    if (r > 0) {
      p += r;
      len -= (size_t)r;
      *started = true;
      stall = em__store_now_ms() + STALL_MS;
      continue;
    }
    if (r == 0) return EM__IO_CLOSED;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int w = wait_fd(fd, POLLIN, *started ? stall : deadline, err);
      if (w == 0 && !*started) return EM__IO_TIMEOUT;
      if (w == 0) {
        *err = ETIMEDOUT;
        return EM__IO_ERROR;
      }
      if (w < 0) return EM__IO_ERROR;
      continue;
    }
    *err = errno;
    return errno == ECONNRESET ? EM__IO_CLOSED : EM__IO_ERROR;
  }
  return EM__IO_OK;
}

em__store_io em__store_recv_frame(int fd, int64_t deadline, size_t cap, uint8_t **body,
                                  size_t *len, int *err) {
  uint8_t hdr[4];
  bool started = false;
  *body = NULL;
  *len = 0;
  em__store_io r = recv_all(fd, hdr, 4, deadline, &started, err);
  if (r != EM__IO_OK) return r;
  uint32_t n = get_be32(hdr);
  if (n > cap) {
    *len = n;
    return EM__IO_TOO_BIG;
  }
  uint8_t *b = malloc((size_t)n + 1);
  if (!b) return EM__IO_NOMEM;
  r = recv_all(fd, b, n, deadline, &started, err);
  if (r != EM__IO_OK) {
    free(b);
    return r;
  }
  *body = b;
  *len = n;
  return EM__IO_OK;
}

const char *em__store_io_str(em__store_io r, int err) {
  switch (r) {
    case EM__IO_OK: return "ok";
    case EM__IO_TIMEOUT: return "timed out";
    case EM__IO_CLOSED: return "connection closed by peer";
    case EM__IO_TOO_BIG: return "frame larger than the size cap";
    case EM__IO_NOMEM: return "out of memory";
    case EM__IO_ERROR: return strerror(err);
  }
  return "unknown I/O error";
}

/* ---- authentication ------------------------------------------------------------ */

static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;
static int crypto_ok;

static void crypto_init_once(void) { crypto_ok = sodium_init() >= 0; }

int em__store_crypto_init(void) {
  pthread_once(&crypto_once, crypto_init_once);
  return crypto_ok ? 0 : -1;
}

const char *em__store_secret(const char *opt) {
  const char *s = opt ? opt : getenv(EM_STORE_SECRET_ENV);
  return (s && s[0]) ? s : NULL;
}

int em__store_hmac(const char *secret, const uint8_t *challenge, size_t clen,
                   uint8_t out[EM__STORE_HMAC_BYTES]) {
  if (em__store_crypto_init() != 0) return -1;
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
  crypto_auth_hmacsha256_update(&st, challenge, clen);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
  return 0;
}

bool em__store_hmac_verify(const char *secret, const uint8_t *challenge, size_t clen,
                           const uint8_t *mac, size_t mlen) {
  uint8_t want[EM__STORE_HMAC_BYTES];
  if (mlen != sizeof want || !mac) return false;
  if (em__store_hmac(secret, challenge, clen, want) != 0) return false;
  bool ok = sodium_memcmp(want, mac, sizeof want) == 0;
  sodium_memzero(want, sizeof want);
  return ok;
}

/* ---- helpers --------------------------------------------------------------------- */

const char *em__store_key_repr(const uint8_t *key, size_t len, char *buf, size_t size) {
  size_t o = 0;
  if (size < 8) {
    if (size) buf[0] = '\0';
    return buf;
  }
  buf[o++] = '\'';
  for (size_t i = 0; i < len; i++) {
    char tmp[5];
    uint8_t c = key[i];
    int k;
    if (c == '\'' || c == '\\') k = snprintf(tmp, sizeof tmp, "\\%c", c);
    else if (c >= 0x20 && c < 0x7f) k = snprintf(tmp, sizeof tmp, "%c", c);
    else k = snprintf(tmp, sizeof tmp, "\\x%02x", c);
    if (o + (size_t)k + 5 > size) { /* room for "...'\0" */
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    memcpy(buf + o, tmp, (size_t)k);
    o += (size_t)k;
  }
  buf[o++] = '\'';
  buf[o] = '\0';
  return buf;
}

bool em__store_parse_int64(const uint8_t *s, size_t len, int64_t *out) {
  size_t i = 0;
  bool neg = false;
  if (len == 0) return false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
  }
  if (i == len) return false;
  uint64_t v = 0;
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (limit - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return true;
}

void *em__store_dup_value(const void *p, size_t len) {
  uint8_t *v = malloc(len + 1);
  if (!v) return NULL;
  if (len) memcpy(v, p, len);
  v[len] = '\0';
  return v;
}
