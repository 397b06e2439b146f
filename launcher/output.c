/* Worker output: every line a worker writes to stdout or stderr comes out
 * of trainrun's stdout or stderr as "[rank N]: line", whole — the loop is
 * one thread and writes whole lines only, so lines of different ranks never
 * mix. A line longer than LINE_MAX_BYTES is cut into lines of that size; a
 * last line without a newline is completed at the end. Lines also go,
 * unprefixed, to the rank's log file, and the last stderr lines are kept
 * for the failure summary.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "launcher/launcher_impl.h"

#define LINE_MAX_BYTES (64 * 1024)
#define TAIL_LINE_BYTES 1024
#define PEND_BYTES (32 * 1024)

void tr_write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, 1000);
    } else {
      return; /* EPIPE, EBADF: nobody reads our output any more */
    }
  }
}

/* Lines waiting for one write per read burst: [0] stdout, [1] stderr. */
static char pend[2][PEND_BYTES];
static size_t pend_len[2];

static void flush_pending(int idx) {
  if (pend_len[idx]) tr_write_all(idx + 1, pend[idx], pend_len[idx]);
  pend_len[idx] = 0;
}

static void emit_console(int idx, int rank, const char *line, size_t len) {
  char prefix[32];
  int plen = snprintf(prefix, sizeof prefix, "[rank %d]: ", rank);
  size_t need = (size_t)plen + len + 1;
  if (pend_len[idx] + need > PEND_BYTES) flush_pending(idx);
  if (need > PEND_BYTES) {
    /* a long line: one write of its own (assembled so it stays whole) */
    char *buf = malloc(need);
    if (!buf) {
      tr_write_all(idx + 1, prefix, (size_t)plen);
      tr_write_all(idx + 1, line, len);
      tr_write_all(idx + 1, "\n", 1);
      return;
    }
    memcpy(buf, prefix, (size_t)plen);
    memcpy(buf + plen, line, len);
    buf[need - 1] = '\n';
    tr_write_all(idx + 1, buf, need);
    free(buf);
    return;
  }
  char *d = pend[idx] + pend_len[idx];
  memcpy(d, prefix, (size_t)plen);
  memcpy(d + plen, line, len);
  d[plen + len] = '\n';
  pend_len[idx] += need;
}

static void tail_push(tr_line_tail *t, const char *line, size_t len) {
  if (len > TAIL_LINE_BYTES) len = TAIL_LINE_BYTES;
  char *c = malloc(len + 1);
  if (!c) return;
  memcpy(c, line, len);
  c[len] = 0;
  free(t->lines[t->next]);
  t->lines[t->next] = c;
  t->next = (t->next + 1) % TR_TAIL_LINES;
  if (t->count < TR_TAIL_LINES) t->count++;
}

void tr_tail_free(tr_line_tail *t) {
  for (int i = 0; i < TR_TAIL_LINES; i++) free(t->lines[i]);
  *t = (tr_line_tail){0};
}

static void emit_line(tr_stream *s, const char *line, size_t len) {
  if (s->console) emit_console(s->which == TR_STDERR, s->rank, line, len);
  if (s->logfd >= 0) {
    struct iovec iov[2] = {{(void *)line, len}, {"\n", 1}};
    ssize_t r;
    do r = writev(s->logfd, iov, 2);
    while (r < 0 && errno == EINTR);
  }
  if (s->tail) tail_push(s->tail, line, len);
}

void tr_stream_init(tr_stream *s, int fd, int which, int rank, bool console, int logfd,
                    tr_line_tail *tail) {
  *s = (tr_stream){.fd = fd, .which = which, .rank = rank, .console = console, .logfd = logfd,
                   .tail = tail};
}

static void feed(tr_stream *s, const char *p, size_t n) {
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    if (s->len == 0 && nl) {
      emit_line(s, p, take); /* the common case: no copy */
    } else {
      if (s->len + take > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + take) cap *= 2;
        if (cap > LINE_MAX_BYTES) cap = LINE_MAX_BYTES;
        char *b = realloc(s->buf, cap);
        if (!b) { /* out of memory: emit what we have */
          emit_line(s, s->buf ? s->buf : "", s->len);
          s->len = 0;
          emit_line(s, p, take);
          goto next;
        }
        s->buf = b;
        s->cap = cap;
      }
      size_t room = s->cap - s->len;
      if (take > room) {
        /* a line longer than LINE_MAX_BYTES: cut it here */
        memcpy(s->buf + s->len, p, room);
        emit_line(s, s->buf, s->cap);
        s->len = 0;
        p += room;
        n -= room;
        continue;
      }
      memcpy(s->buf + s->len, p, take);
      s->len += take;
      if (nl) {
        emit_line(s, s->buf, s->len);
        s->len = 0;
      }
    }
  next:
    p += take + (nl ? 1 : 0);
    n -= take + (nl ? 1 : 0);
  }
}

bool tr_stream_pump(tr_stream *s) {
  if (s->fd < 0) return false;
  char buf[65536];
  bool open = true;
  /* a bounded number of reads per call, so one chatty rank cannot starve
   * the loop (the poll handle fires again while data remains) */
  for (int i = 0; i < 8; i++) {
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n > 0) {
      feed(s, buf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    open = false; /* EOF or a read error */
    break;
  }
  flush_pending(s->which == TR_STDERR);
  if (!open) {
    close(s->fd);
    s->fd = -1;
  }
  return open;
}

void tr_stream_finish(tr_stream *s) {
  while (s->fd >= 0 && tr_stream_pump(s)) {
    /* drain what is buffered, but do not wait for writers still alive */
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0) break;
  }
  if (s->len > 0) {
    emit_line(s, s->buf, s->len);
    s->len = 0;
    flush_pending(s->which == TR_STDERR);
  }
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  free(s->buf);
  s->buf = NULL;
  s->cap = 0;
}

void tr_msg(const char *fmt, ...) {
  char buf[4096];
  size_t n = (size_t)snprintf(buf, sizeof buf, "trainrun: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  if (m > 0) n += (size_t)m < sizeof buf - n - 1 ? (size_t)m : sizeof buf - n - 2;
  buf[n++] = '\n';
  flush_pending(1);
  tr_write_all(2, buf, n);
}
