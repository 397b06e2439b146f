/* ember store internals shared by comm/store_*.c (and the store tests):
 * protocol constants, framing, authentication, small helpers.
 * Not part of the API.
 */
#ifndef EMBER_COMM_STORE_IMPL_H
#define EMBER_COMM_STORE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/store.h"
#include "comm/store.pb-c.h"
#include "core/core_impl.h"

/* Bumped on any incompatible change of comm/store.proto's meaning. */
#define EM__STORE_PROTOCOL_VERSION 1u
#define EM__STORE_CHALLENGE_BYTES 32u
#define EM__STORE_HMAC_BYTES 32u
/* Largest frame body after authentication: a compare_set carries two
 * values; keys and protobuf overhead get the rest. */
#define EM__STORE_MAX_FRAME (2u * EM_STORE_MAX_VALUE + (8u << 20))
/* Largest frame before authentication: a stranger cannot make the server
 * allocate more than this. */
#define EM__STORE_MAX_AUTH_FRAME 1024u
/* Default time a new connection has to authenticate. */
#define EM__STORE_AUTH_TIMEOUT_MS 10000

/* ---- the generic store handle ---------------------------------------- */

struct em_store {
  int refcount; /* atomic (__atomic builtins) */
  const em_store_ops *ops;
  void *ctx;
  int64_t timeout_ms; /* atomic; the default for every call */
};

/* ---- framing: 4-byte big-endian length + protobuf message ------------- */

/* Packs msg into a new malloc'd frame (header included); NULL on OOM. */
uint8_t *em__store_frame_pack(const ProtobufCMessage *msg, size_t *frame_len);

/* An incremental frame reader for a byte stream (the server's reads). */
typedef struct em__store_reader {
  uint8_t hdr[4];
  size_t hdr_got;
  uint8_t *body; /* malloc'd once the header is complete */
  size_t len, got;
} em__store_reader;

typedef enum {
  EM__READ_MORE = 0,   /* consumed everything; no complete frame yet */
  EM__READ_FRAME = 1,  /* *body, *len hold a frame (caller frees body) */
  EM__READ_TOO_BIG = -1,
  EM__READ_NOMEM = -2,
} em__store_read_result;

/* Consumes bytes from *p, *n until a frame completes or the input runs out;
 * advances *p, *n. On EM__READ_TOO_BIG *len holds the announced length. */
em__store_read_result em__store_reader_feed(em__store_reader *r, const uint8_t **p, size_t *n,
                                            size_t cap, uint8_t **body, size_t *len);
void em__store_reader_reset(em__store_reader *r);

/* ---- blocking framed I/O with deadlines (the client's side) ------------ */

/* Monotonic milliseconds. */
int64_t em__store_now_ms(void);

typedef enum {
  EM__IO_OK = 0,
  EM__IO_TIMEOUT = 1,
  EM__IO_CLOSED = 2,   /* orderly EOF */
  EM__IO_ERROR = 3,    /* errno-style failure; see *err */
  EM__IO_TOO_BIG = 4,
  EM__IO_NOMEM = 5,
} em__store_io;

/* Sends len bytes before deadline (monotonic ms). *err gets errno. */
em__store_io em__store_send_all(int fd, const void *buf, size_t len, int64_t deadline, int *err);
/* Receives one frame (body malloc'd into *body). */
em__store_io em__store_recv_frame(int fd, int64_t deadline, size_t cap, uint8_t **body,
                                  size_t *len, int *err);
/* "connection closed by peer", "timed out", strerror(err), ... */
const char *em__store_io_str(em__store_io r, int err);

/* ---- authentication ------------------------------------------------------ */

/* The effective secret: opt if non-NULL, else $EMBER_STORE_SECRET; NULL when
 * that is empty or unset (= no secret). */
const char *em__store_secret(const char *opt);
/* out = HMAC-SHA256(secret, challenge). Returns 0, or -1 if libsodium
 * cannot initialise. */
int em__store_hmac(const char *secret, const uint8_t *challenge, size_t clen,
                   uint8_t out[EM__STORE_HMAC_BYTES]);
/* Constant-time check of mac against HMAC-SHA256(secret, challenge). */
bool em__store_hmac_verify(const char *secret, const uint8_t *challenge, size_t clen,
                           const uint8_t *mac, size_t mlen);
/* sodium_init once; 0 or -1. */
int em__store_crypto_init(void);

/* ---- helpers --------------------------------------------------------------- */

/* key as a quoted C-escaped string ('a\x00b'), truncated to fit size. */
const char *em__store_key_repr(const uint8_t *key, size_t len, char *buf, size_t size);
#define EM__KEY_REPR_MAX 160
/* Strict decimal int64 ("-12"; no spaces, no '+'); false if not one. */
bool em__store_parse_int64(const uint8_t *s, size_t len, int64_t *out);
/* malloc(len + 1) copy with a NUL after the bytes; NULL on OOM. */
void *em__store_dup_value(const void *p, size_t len);

#endif
