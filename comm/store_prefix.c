/* The prefix store: key k lives in the base store as "prefix/k". It holds a
 * reference to its base and forwards every operation with the timeout it
 * was given, so the prefix store's own timeout governs its calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/store_impl.h"

typedef struct prefix_store {
  em_store *base;
  char *prefix; /* without the '/' */
  size_t plen;
} prefix_store;

static const em_store_ops prefix_ops;

/* "prefix/key" in a new buffer; NULL (error set) on OOM. */
static char *full_key(const prefix_store *p, const char *key) {
  size_t kn = strlen(key);
  char *k = malloc(p->plen + 1 + kn + 1);
  if (!k) return EM_FAIL(EM_ERR_NOMEM, "store: prefix: out of memory");
  memcpy(k, p->prefix, p->plen);
  k[p->plen] = '/';
  memcpy(k + p->plen + 1, key, kn + 1);
  return k;
}

static em_status check_len(const prefix_store *p, const char *key) {
  if (p->plen + 1 + strlen(key) > EM_STORE_MAX_KEY)
    return em__set_error(EM_ERR_INVALID,
                         "store: prefix: key with its prefix (%zu bytes) exceeds the %u-byte limit",
                         p->plen + 1 + strlen(key), EM_STORE_MAX_KEY);
  return EM_OK;
}

/* Calls a base op on the prefixed key. */
#define WITH_KEY(p, key, fk, call)                  \
  do {                                              \
    EM_CHECK(check_len((p), (key)));                \
    char *fk = full_key((p), (key));                \
    if (!fk) return EM_ERR_NOMEM;                   \
    em_status st_ = (call);                         \
    free(fk);                                       \
    return st_;                                     \
  } while (0)

static em_status prefix_set(void *ctx, const char *key, const void *value, size_t len,
                            int64_t timeout_ms) {
  prefix_store *p = ctx;
  WITH_KEY(p, key, fk, p->base->ops->set(p->base->ctx, fk, value, len, timeout_ms));
}

static em_status prefix_get(void *ctx, const char *key, int64_t timeout_ms, void **value,
                            size_t *len) {
  prefix_store *p = ctx;
  WITH_KEY(p, key, fk, p->base->ops->get(p->base->ctx, fk, timeout_ms, value, len));
}

static em_status prefix_add(void *ctx, const char *key, int64_t delta, int64_t timeout_ms,
                            int64_t *result) {
  prefix_store *p = ctx;
  WITH_KEY(p, key, fk, p->base->ops->add(p->base->ctx, fk, delta, timeout_ms, result));
}

static em_status prefix_compare_set(void *ctx, const char *key, const void *expected,
                                    size_t elen, const void *desired, size_t dlen,
                                    int64_t timeout_ms, void **current, size_t *clen) {
  prefix_store *p = ctx;
  WITH_KEY(p, key, fk,
           p->base->ops->compare_set(p->base->ctx, fk, expected, elen, desired, dlen, timeout_ms,
                                     current, clen));
}

static em_status prefix_delete_key(void *ctx, const char *key, int64_t timeout_ms,
                                   bool *existed) {
  prefix_store *p = ctx;
  WITH_KEY(p, key, fk, p->base->ops->delete_key(p->base->ctx, fk, timeout_ms, existed));
}

/* Prefixed copies of keys[0..n); NULL (error set) on failure. */
static char **full_keys(const prefix_store *p, const char *const *keys, size_t n) {
  char **fk = calloc(n ? n : 1, sizeof *fk);
  if (!fk) return EM_FAIL(EM_ERR_NOMEM, "store: prefix: out of memory");
  for (size_t i = 0; i < n; i++) {
    if (check_len(p, keys[i]) != EM_OK || !(fk[i] = full_key(p, keys[i]))) {
      for (size_t j = 0; j < i; j++) free(fk[j]);
      free(fk);
      return NULL;
    }
  }
  return fk;
}

static void free_keys(char **fk, size_t n) {
  for (size_t i = 0; i < n; i++) free(fk[i]);
  free(fk);
}

static em_status prefix_check(void *ctx, const char *const *keys, size_t nkeys,
                              int64_t timeout_ms, bool *all) {
  prefix_store *p = ctx;
  char **fk = full_keys(p, keys, nkeys);
  if (!fk) return em_last_status();
  em_status st = p->base->ops->check(p->base->ctx, (const char *const *)fk, nkeys, timeout_ms, all);
  free_keys(fk, nkeys);
  return st;
}

static em_status prefix_wait(void *ctx, const char *const *keys, size_t nkeys,
                             int64_t timeout_ms) {
  prefix_store *p = ctx;
  char **fk = full_keys(p, keys, nkeys);
  if (!fk) return em_last_status();
  em_status st = p->base->ops->wait(p->base->ctx, (const char *const *)fk, nkeys, timeout_ms);
  free_keys(fk, nkeys);
  return st;
}

static em_status prefix_num_keys(void *ctx, int64_t timeout_ms, int64_t *n) {
  prefix_store *p = ctx;
  return p->base->ops->num_keys(p->base->ctx, timeout_ms, n);
}

static void prefix_destroy(void *ctx) {
  prefix_store *p = ctx;
  em_store_release(p->base);
  free(p->prefix);
  free(p);
}

/* Wraps base (taking over the caller's reference to it on success and on
 * failure alike). */
static em_store *prefix_wrap(em_store *base, const char *prefix) {
  prefix_store *p = calloc(1, sizeof *p);
  if (!p || !(p->prefix = strdup(prefix))) {
    free(p);
    em_store_release(base);
    return EM_FAIL(EM_ERR_NOMEM, "store: prefix_create: out of memory");
  }
  p->plen = strlen(prefix);
  p->base = base;
  em_store *s = em_store_create(&prefix_ops, p);
  if (!s) {
    prefix_destroy(p);
    return NULL;
  }
  s->timeout_ms = em_store_timeout(base);
  return s;
}

static em_store *prefix_clone(void *ctx) {
  prefix_store *p = ctx;
  em_store *b = em_store_clone(p->base);
  if (!b) return NULL;
  return prefix_wrap(b, p->prefix);
}

static const em_store_ops prefix_ops = {
    .name = "prefix",
    .set = prefix_set,
    .get = prefix_get,
    .add = prefix_add,
    .compare_set = prefix_compare_set,
    .check = prefix_check,
    .wait = prefix_wait,
    .delete_key = prefix_delete_key,
    .num_keys = prefix_num_keys,
    .clone = prefix_clone,
    .destroy = prefix_destroy,
};

em_store *em_store_prefix_create(em_store *base, const char *prefix) {
  if (!base) return EM_FAIL(EM_ERR_INVALID, "store: prefix_create: base store is NULL");
  if (!prefix) return EM_FAIL(EM_ERR_INVALID, "store: prefix_create: prefix is NULL");
  if (strlen(prefix) >= EM_STORE_MAX_KEY)
    return EM_FAIL(EM_ERR_INVALID, "store: prefix_create: prefix of %zu bytes is too long",
                   strlen(prefix));
  return prefix_wrap(em_store_retain(base), prefix);
}
