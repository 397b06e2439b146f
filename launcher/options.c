/* The trainrun command line: torchrun's options (dashes or underscores,
 * "--opt value" or "--opt=value"), a few of ember's own, --config files,
 * validation with messages that name the option and the value, --help.
 *
 * Everything up to the first non-option argument (or "--") is trainrun's;
 * that argument is the program and the rest are its arguments, as with
 * torchrun.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launcher/launcher_impl.h"

extern const char *em_version(void);

typedef enum {
  OPT_NPROC,
  OPT_NNODES,
  OPT_NODE_RANK,
  OPT_RDZV,
  OPT_RDZV_ID,
  OPT_RDZV_BACKEND,
  OPT_RDZV_CONF,
  OPT_RDZV_TIMEOUT,
  OPT_MASTER_ADDR,
  OPT_MASTER_PORT,
  OPT_STANDALONE,
  OPT_MAX_RESTARTS,
  OPT_MONITOR_INTERVAL,
  OPT_HEARTBEAT_TIMEOUT,
  OPT_GRACE_PERIOD,
  OPT_LOG_DIR,
  OPT_TEE,
  OPT_REDIRECTS,
  OPT_RANKS_FILTER,
  OPT_LOCAL_RANKS_FILTER,
  OPT_NO_PYTHON,
  OPT_MODULE,
  OPT_SIGNALS,
  OPT_START_METHOD,
  OPT_CONFIG,
  OPT_HELP,
  OPT_VERSION,
} opt_id;

typedef struct optdef {
  opt_id id;
  const char *name;     /* canonical long name */
  const char *aliases;  /* space-separated other long names */
  char shortc;          /* 0 = none */
  bool arg;             /* takes a value */
} optdef;

static const optdef OPTS[] = {
    {OPT_NPROC, "nproc", "nproc-per-node", 0, true},
    {OPT_NNODES, "nnodes", "", 0, true},
    {OPT_NODE_RANK, "node-rank", "", 0, true},
    {OPT_RDZV, "rdzv", "rdzv-endpoint", 0, true},
    {OPT_RDZV_ID, "rdzv-id", "", 0, true},
    {OPT_RDZV_BACKEND, "rdzv-backend", "", 0, true},
    {OPT_RDZV_CONF, "rdzv-conf", "", 0, true},
    {OPT_RDZV_TIMEOUT, "rdzv-timeout", "", 0, true},
    {OPT_MASTER_ADDR, "master-addr", "", 0, true},
    {OPT_MASTER_PORT, "master-port", "", 0, true},
    {OPT_STANDALONE, "standalone", "", 0, false},
    {OPT_MAX_RESTARTS, "max-restarts", "", 0, true},
    {OPT_MONITOR_INTERVAL, "monitor-interval", "", 0, true},
    {OPT_HEARTBEAT_TIMEOUT, "heartbeat-timeout", "", 0, true},
    {OPT_GRACE_PERIOD, "grace-period", "", 0, true},
    {OPT_LOG_DIR, "log-dir", "", 0, true},
    {OPT_TEE, "tee", "", 't', true},
    {OPT_REDIRECTS, "redirects", "", 'r', true},
    {OPT_RANKS_FILTER, "ranks-filter", "", 0, true},
    {OPT_LOCAL_RANKS_FILTER, "local-ranks-filter", "", 0, true},
    {OPT_NO_PYTHON, "no-python", "", 0, false},
    {OPT_MODULE, "module", "", 'm', false},
    {OPT_SIGNALS, "signals", "", 0, true},
    {OPT_START_METHOD, "start-method", "", 0, true},
    {OPT_CONFIG, "config", "", 0, true},
    {OPT_HELP, "help", "", 'h', false},
    {OPT_VERSION, "version", "", 0, false},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

/* ---- small parsers ---------------------------------------------------- */

static em_status fail(const char *origin, const char *opt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static em_status fail(const char *origin, const char *opt, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return em_set_error(EM_ERR_INVALID, "%s%s%s%s: %s", origin ? origin : "", origin ? ": " : "",
                      opt ? "--" : "", opt ? opt : "", msg);
}

/* A whole-string integer in [lo, hi]. */
static bool parse_int(const char *s, long lo, long hi, long *out) {
  if (!s || !*s) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) return false;
  *out = v;
  return true;
}

em_status tr_parse_seconds(const char *what, const char *s, double *out) {
  if (!s || !*s) return em_set_error(EM_ERR_INVALID, "%s: empty duration", what);
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno) goto bad;
  double mul = 1;
  if (!strcmp(end, "") || !strcmp(end, "s")) mul = 1;
  else if (!strcmp(end, "ms")) mul = 1e-3;
  else if (!strcmp(end, "m") || !strcmp(end, "min")) mul = 60;
  else if (!strcmp(end, "h")) mul = 3600;
  else goto bad;
  v *= mul;
  if (!isfinite(v) || v < 0 || v > 1e9) goto bad;
  *out = v;
  return EM_OK;
bad:
  return em_set_error(EM_ERR_INVALID,
                      "%s: '%s' is not a duration (seconds, e.g. 5, 0.5, 200ms, 2m)", what, s);
}

em_status tr_parse_rankset(const char *what, const char *s, tr_rankset *out) {
  tr_rankset rs = {0};
  char *copy = strdup(s ? s : "");
  if (!copy) return em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
  em_status st = EM_OK;
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (isspace((unsigned char)*tok)) tok++;
    char *e = tok + strlen(tok);
    while (e > tok && isspace((unsigned char)e[-1])) *--e = 0;
    long lo, hi;
    char *dash = strchr(tok, '-');
    if (dash) {
      *dash = 0;
      if (!parse_int(tok, 0, INT32_MAX, &lo) || !parse_int(dash + 1, 0, INT32_MAX, &hi) ||
          hi < lo) {
        *dash = '-';
        st = em_set_error(EM_ERR_INVALID,
                          "%s: '%s' is not a rank or a range LO-HI of ranks (e.g. 0,2-3)", what,
                          tok);
        goto done;
      }
    } else if (!parse_int(tok, 0, INT32_MAX, &lo)) {
      st = em_set_error(EM_ERR_INVALID,
                        "%s: '%s' is not a rank or a range LO-HI of ranks (e.g. 0,2-3)", what,
                        tok);
      goto done;
    } else {
      hi = lo;
    }
    int(*r)[2] = realloc(rs.ranges, (size_t)(rs.n + 1) * sizeof *r);
    if (!r) {
      st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
      goto done;
    }
    rs.ranges = r;
    rs.ranges[rs.n][0] = (int)lo;
    rs.ranges[rs.n][1] = (int)hi;
    rs.n++;
  }
  if (rs.n == 0) st = em_set_error(EM_ERR_INVALID, "%s: no ranks given (e.g. 0,2-3)", what);
done:
  free(copy);
  if (st) {
    free(rs.ranges);
    return st;
  }
  tr_rankset_free(out);
  *out = rs;
  return EM_OK;
}

bool tr_rankset_has(const tr_rankset *rs, int rank) {
  if (rs->n == 0) return true;
  for (int i = 0; i < rs->n; i++)
    if (rank >= rs->ranges[i][0] && rank <= rs->ranges[i][1]) return true;
  return false;
}

void tr_rankset_free(tr_rankset *rs) {
  free(rs->ranges);
  rs->ranges = NULL;
  rs->n = 0;
}

em_status tr_parse_streamspec(const char *what, const char *s, tr_streamspec *out) {
  tr_streamspec ss = {.set = true, .all = -1};
  long v;
  if (parse_int(s, 0, 3, &v)) {
    ss.all = (int)v;
    tr_streamspec_free(out);
    *out = ss;
    return EM_OK;
  }
  char *copy = strdup(s ? s : "");
  if (!copy) return em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
  em_status st = EM_OK;
  char *save = NULL;
  int n = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(tok, ':');
    long lr;
    if (!colon) goto bad;
    *colon = 0;
    if (!parse_int(tok, 0, INT32_MAX, &lr) || !parse_int(colon + 1, 0, 3, &v)) {
      *colon = ':';
      goto bad;
    }
    int(*m)[2] = realloc(ss.map, (size_t)(n + 1) * sizeof *m);
    if (!m) {
      st = em_set_error(EM_ERR_NOMEM, "%s: out of memory", what);
      goto done;
    }
    ss.map = m;
    ss.map[n][0] = (int)lr;
    ss.map[n][1] = (int)v;
    n++;
    continue;
  bad:
    st = em_set_error(EM_ERR_INVALID,
                      "%s: '%s' is not a stream choice: 0 (none), 1 (stdout), 2 (stderr), "
                      "3 (both), or per local rank like 0:3,1:1",
                      what, s ? s : "");
    goto done;
  }
  if (n == 0)
    st = em_set_error(EM_ERR_INVALID,
                      "%s: empty stream choice: give 0, 1, 2, 3 or local_rank:value pairs", what);
done:
  free(copy);
  if (st) {
    free(ss.map);
    return st;
  }
  ss.n = n;
  tr_streamspec_free(out);
  *out = ss;
  return EM_OK;
}

int tr_streamspec_mask(const tr_streamspec *ss, int local_rank, int dflt) {
  if (!ss->set) return dflt;
  for (int i = 0; i < ss->n; i++)
    if (ss->map[i][0] == local_rank) return ss->map[i][1];
  return ss->all >= 0 ? ss->all : 0;
}

void tr_streamspec_free(tr_streamspec *ss) {
  free(ss->map);
  *ss = (tr_streamspec){.all = -1};
}

static const struct {
  int sig;
  const char *name;
} SIGNALS[] = {
    {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGTERM, "SIGTERM"},
    {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"},
};

int tr_signal_from_name(const char *s) {
  long n;
  if (parse_int(s, 1, 64, &n)) {
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
      if (SIGNALS[i].sig == n) return (int)n;
    return 0;
  }
  for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++) {
    const char *nm = SIGNALS[i].name;
    if (!strcasecmp(s, nm) || !strcasecmp(s, nm + 3)) return SIGNALS[i].sig;
  }
  return 0;
}

const char *tr_signal_name(int sig) {
  static __thread char buf[32];
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev) {
    snprintf(buf, sizeof buf, "SIG%s", abbrev);
    return buf;
  }
  snprintf(buf, sizeof buf, "signal %d", sig);
  return buf;
}

static em_status parse_signals(const char *origin, const char *s, uint32_t *mask) {
  uint32_t m = 0;
  if (!strcasecmp(s, "none") || !*s) {
    *mask = 0;
    return EM_OK;
  }
  char *copy = strdup(s);
  if (!copy) return em_set_error(EM_ERR_NOMEM, "--signals: out of memory");
  char *save = NULL;
  for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    int sig = tr_signal_from_name(tok);
    if (!sig) {
      em_status st = fail(origin, "signals",
                          "'%s' is not a signal trainrun forwards (choose from SIGINT, SIGTERM, "
                          "SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, or none)",
                          tok);
      free(copy);
      return st;
    }
    m |= 1u << sig;
  }
  free(copy);
  *mask = m;
  return EM_OK;
}

static bool parse_bool(const char *s, bool *out) {
  if (!s || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1") ||
      !strcasecmp(s, "on")) {
    *out = true;
    return true;
  }
  if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0") ||
      !strcasecmp(s, "off")) {
    *out = false;
    return true;
  }
  return false;
}

static int count_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else the
 * devices the NVIDIA driver lists. trainrun never loads CUDA. */
static int count_gpus(void) {
  const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
  if (cvd) {
    int n = 0;
    for (const char *p = cvd; *p;) {
      const char *c = strchr(p, ',');
      size_t len = c ? (size_t)(c - p) : strlen(p);
      /* CUDA stops at the first invalid (e.g. negative) id */
      if (len == 0 || p[0] == '-') break;
      n++;
      p += len + (c ? 1 : 0);
    }
    return n;
  }
  DIR *d = opendir("/proc/driver/nvidia/gpus");
  if (!d) return 0;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* host, host:port, [v6], [v6]:port */
static em_status parse_endpoint(const char *origin, const char *opt, const char *s, char **host,
                                int *port) {
  const char *hend, *colon = NULL;
  char *h = NULL;
  if (s[0] == '[') {
    hend = strchr(s, ']');
    if (!hend || hend == s + 1) goto bad;
    if (hend[1] == ':') colon = hend + 1;
    else if (hend[1]) goto bad;
    h = strndup(s + 1, (size_t)(hend - s - 1));
  } else {
    colon = strrchr(s, ':');
    if (colon && strchr(s, ':') != colon) colon = NULL; /* a bare IPv6 address */
    hend = colon ? colon : s + strlen(s);
    if (hend == s) goto bad;
    h = strndup(s, (size_t)(hend - s));
  }
  if (!h) return em_set_error(EM_ERR_NOMEM, "out of memory");
  if (colon) {
    long p;
    if (!parse_int(colon + 1, 0, 65535, &p)) {
      free(h);
      return fail(origin, opt, "'%s': port '%s' is not a number in [0, 65535]", s, colon + 1);
    }
    *port = (int)p;
  }
  free(*host);
  *host = h;
  return EM_OK;
bad:
  return fail(origin, opt, "'%s' is not HOST or HOST:PORT", s);
}

static em_status parse_rdzv_conf(tr_options *o, const char *origin, const char *s) {
  char *copy = strdup(s);
  if (!copy) return em_set_error(EM_ERR_NOMEM, "out of memory");
  em_status st = EM_OK;
  char *save = NULL;
  double keep_alive = -1;
  long attempts = -1;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    if (!eq) {
      st = fail(origin, "rdzv-conf", "'%s' is not KEY=VALUE", tok);
      break;
    }
    *eq = 0;
    const char *k = tok, *v = eq + 1;
    char what[96];
    snprintf(what, sizeof what, "--rdzv-conf %s", k);
    if (!strcmp(k, "join_timeout") || !strcmp(k, "timeout")) {
      st = tr_parse_seconds(what, v, &o->rdzv_timeout);
    } else if (!strcmp(k, "last_call_timeout")) {
      st = tr_parse_seconds(what, v, &o->last_call);
    } else if (!strcmp(k, "keep_alive_interval")) {
      st = tr_parse_seconds(what, v, &keep_alive);
    } else if (!strcmp(k, "keep_alive_max_attempt")) {
      if (!parse_int(v, 1, 1000000, &attempts))
        st = fail(origin, "rdzv-conf", "keep_alive_max_attempt '%s' is not a positive number", v);
    } else if (!strcmp(k, "read_timeout") || !strcmp(k, "close_timeout") ||
               !strcmp(k, "is_host") || !strcmp(k, "store_type")) {
      /* torchrun tuning knobs that have no counterpart here */
    } else {
      st = fail(origin, "rdzv-conf",
                "unknown key '%s' (known: join_timeout, last_call_timeout, "
                "keep_alive_interval, keep_alive_max_attempt)",
                k);
    }
    if (st) break;
  }
  free(copy);
  if (st) return st;
  if (keep_alive > 0) o->monitor_interval = keep_alive;
  if (attempts > 0) o->heartbeat_timeout = o->monitor_interval * (double)attempts;
  return EM_OK;
}

/* ---- the option table ---------------------------------------------------- */

/* Lower-case, '_' -> '-', leading dashes dropped. */
static void normalize(const char *in, char *out, size_t size) {
  while (*in == '-') in++;
  size_t i = 0;
  for (; in[i] && i + 1 < size; i++)
    out[i] = in[i] == '_' ? '-' : (char)tolower((unsigned char)in[i]);
  out[i] = 0;
}

static bool has_alias(const char *aliases, const char *name) {
  size_t n = strlen(name);
  for (const char *p = aliases; *p;) {
    const char *sp = strchr(p, ' ');
    size_t len = sp ? (size_t)(sp - p) : strlen(p);
    if (len == n && !strncmp(p, name, n)) return true;
    p += len + (sp ? 1 : 0);
  }
  return false;
}

static const optdef *find_opt(const char *norm) {
  for (size_t i = 0; i < NOPTS; i++)
    if (!strcmp(OPTS[i].name, norm) || has_alias(OPTS[i].aliases, norm)) return &OPTS[i];
  return NULL;
}

static const optdef *find_short(char c) {
  for (size_t i = 0; i < NOPTS; i++)
    if (OPTS[i].shortc == c) return &OPTS[i];
  return NULL;
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40) return 99;
  size_t d[41][41];
  for (size_t i = 0; i <= la; i++) d[i][0] = i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

/* " (did you mean --nproc?)" or "" */
static void suggest(const char *norm, char *out, size_t size) {
  const char *best = NULL;
  size_t bestd = 3, len = strlen(norm);
  for (size_t i = 0; i < NOPTS; i++) {
    size_t d = edit_distance(norm, OPTS[i].name);
    if (d < bestd) {
      bestd = d;
      best = OPTS[i].name;
    }
  }
  for (size_t i = 0; !best && len >= 3 && i < NOPTS; i++)
    if (!strncmp(OPTS[i].name, norm, len)) best = OPTS[i].name;
  if (best) snprintf(out, size, " (did you mean --%s?)", best);
  else out[0] = 0;
}

static em_status set_string(char **dst, const char *v) {
  char *c = strdup(v);
  if (!c) return em_set_error(EM_ERR_NOMEM, "out of memory");
  free(*dst);
  *dst = c;
  return EM_OK;
}

static em_status apply(tr_options *o, const optdef *d, const char *value, const char *origin) {
  const char *n = d->name;
  long v;
  bool b = false;
  em_status st;
  char what[128];
  snprintf(what, sizeof what, "%s%s--%s", origin ? origin : "", origin ? ": " : "", n);
  if (!d->arg) {
    if (!parse_bool(value, &b))
      return fail(origin, n, "'%s' is not true or false (it is a flag: --%s)", value, n);
  } else if (!value) {
    return fail(origin, n, "needs a value");
  }
  switch (d->id) {
    case OPT_NPROC:
      if (!strcmp(value, "auto")) {
        int g = count_gpus();
        o->nproc = g > 0 ? g : count_cpus();
      } else if (!strcmp(value, "cpu")) {
        o->nproc = count_cpus();
      } else if (!strcmp(value, "gpu")) {
        o->nproc = count_gpus();
        if (o->nproc == 0) return fail(origin, n, "'gpu' given but this host has no GPU");
      } else if (parse_int(value, 1, TR_MAX_NPROC, &v)) {
        o->nproc = (int)v;
      } else {
        return fail(origin, n, "'%s' is not a number of workers in [1, %d], auto, cpu or gpu",
                    value, TR_MAX_NPROC);
      }
      if (o->nproc > TR_MAX_NPROC) o->nproc = TR_MAX_NPROC;
      return EM_OK;
    case OPT_NNODES: {
      const char *colon = strchr(value, ':');
      long lo, hi;
      if (colon) {
        char lo_s[32];
        size_t len = (size_t)(colon - value);
        if (len >= sizeof lo_s) len = sizeof lo_s - 1;
        memcpy(lo_s, value, len);
        lo_s[len] = 0;
        if (!parse_int(lo_s, 1, TR_MAX_NODES, &lo) || !parse_int(colon + 1, 1, TR_MAX_NODES, &hi))
          return fail(origin, n, "'%s' is not N or MIN:MAX with numbers in [1, %d]", value,
                      TR_MAX_NODES);
        if (lo > hi) return fail(origin, n, "'%s': MIN %ld is larger than MAX %ld", value, lo, hi);
      } else {
        if (!parse_int(value, 1, TR_MAX_NODES, &lo))
          return fail(origin, n, "'%s' is not N or MIN:MAX with numbers in [1, %d]", value,
                      TR_MAX_NODES);
        hi = lo;
      }
      o->nnodes_min = (int)lo;
      o->nnodes_max = (int)hi;
      o->nnodes_set = true;
      return EM_OK;
    }
    case OPT_NODE_RANK:
      if (!parse_int(value, 0, TR_MAX_NODES - 1, &v))
        return fail(origin, n, "'%s' is not a node rank (a number >= 0)", value);
      o->node_rank = (int)v;
      o->node_rank_set = true;
      return EM_OK;
    case OPT_RDZV:
      o->rdzv_port = -1;
      st = parse_endpoint(origin, n, value, &o->rdzv_host, &o->rdzv_port);
      if (st) return st;
      if (o->rdzv_port < 0) o->rdzv_port = TR_DEFAULT_RDZV_PORT;
      return EM_OK;
    case OPT_RDZV_ID:
      if (!*value || strlen(value) > 256 || strpbrk(value, "/ \t\n"))
        return fail(origin, n, "'%s' is not a job id (1-256 characters, no '/' or spaces)", value);
      return set_string(&o->rdzv_id, value);
    case OPT_RDZV_BACKEND:
      if (strcmp(value, "c10d") && strcmp(value, "static") && strcmp(value, "trainrun"))
        return fail(origin, n,
                    "'%s' is not supported: trainrun's agents meet through ember's own store "
                    "(accepted: c10d, static)",
                    value);
      return EM_OK;
    case OPT_RDZV_CONF:
      return parse_rdzv_conf(o, origin, value);
    case OPT_RDZV_TIMEOUT:
      st = tr_parse_seconds(what, value, &o->rdzv_timeout);
      if (!st && o->rdzv_timeout <= 0) return fail(origin, n, "must be more than 0 seconds");
      return st;
    case OPT_MASTER_ADDR:
      if (!*value || strchr(value, ' ')) return fail(origin, n, "'%s' is not a host", value);
      return set_string(&o->master_addr, value);
    case OPT_MASTER_PORT:
      if (!parse_int(value, 0, 65535, &v))
        return fail(origin, n, "'%s' is not a port number in [0, 65535]", value);
      o->master_port = (int)v;
      return EM_OK;
    case OPT_STANDALONE:
      o->standalone = b;
      return EM_OK;
    case OPT_MAX_RESTARTS:
      if (!parse_int(value, 0, 1000000, &v))
        return fail(origin, n, "'%s' is not a number of restarts >= 0", value);
      o->max_restarts = (int)v;
      return EM_OK;
    case OPT_MONITOR_INTERVAL:
      st = tr_parse_seconds(what, value, &o->monitor_interval);
      if (!st && o->monitor_interval < 0.001)
        return fail(origin, n, "must be at least 1 ms, got '%s'", value);
      return st;
    case OPT_HEARTBEAT_TIMEOUT:
      st = tr_parse_seconds(what, value, &o->heartbeat_timeout);
      if (!st && o->heartbeat_timeout <= 0) return fail(origin, n, "must be more than 0 seconds");
      return st;
    case OPT_GRACE_PERIOD:
      return tr_parse_seconds(what, value, &o->grace_period);
    case OPT_LOG_DIR:
      if (!*value) return fail(origin, n, "empty directory name");
      return set_string(&o->log_dir, value);
    case OPT_TEE:
      return tr_parse_streamspec(what, value, &o->tee);
    case OPT_REDIRECTS:
      return tr_parse_streamspec(what, value, &o->redirects);
    case OPT_RANKS_FILTER:
      return tr_parse_rankset(what, value, &o->ranks_filter);
    case OPT_LOCAL_RANKS_FILTER:
      return tr_parse_rankset(what, value, &o->local_ranks_filter);
    case OPT_NO_PYTHON:
      o->no_python = b;
      return EM_OK;
    case OPT_MODULE:
      o->module = b;
      return EM_OK;
    case OPT_SIGNALS:
      return parse_signals(origin, value, &o->signals);
    case OPT_START_METHOD:
      /* torchrun's multiprocessing start method: trainrun always starts
       * fresh processes (fork + exec), which is what each of them means
       * for a worker's own state. */
      if (strcmp(value, "spawn") && strcmp(value, "fork") && strcmp(value, "forkserver"))
        return fail(origin, n, "'%s' is not spawn, fork or forkserver", value);
      return EM_OK;
    case OPT_CONFIG:
      if (origin) return fail(origin, n, "a config file cannot name another config file");
      return set_string(&o->config_path, value);
    case OPT_HELP:
      o->help = b;
      return EM_OK;
    case OPT_VERSION:
      o->version = b;
      return EM_OK;
  }
  return fail(origin, n, "internal error: unhandled option");
}

em_status tr_options_set(tr_options *o, const char *name, const char *value, const char *origin) {
  char norm[64];
  normalize(name, norm, sizeof norm);
  const optdef *d = find_opt(norm);
  if (!d) {
    char hint[96];
    suggest(norm, hint, sizeof hint);
    return em_set_error(EM_ERR_INVALID, "%s%sunknown option '%s'%s", origin ? origin : "",
                        origin ? ": " : "", name, hint);
  }
  return apply(o, d, value, origin);
}

static void set_defaults(tr_options *o) {
  *o = (tr_options){0};
  o->nproc = 1;
  o->nnodes_min = o->nnodes_max = 1;
  o->node_rank = -1;
  o->rdzv_port = -1;
  o->master_port = -1;
  o->monitor_interval = 1.0;
  o->heartbeat_timeout = 10.0;
  o->rdzv_timeout = 600.0;
  o->last_call = 2.0;
  o->grace_period = 5.0;
  o->signals = 1u << SIGINT | 1u << SIGTERM | 1u << SIGHUP | 1u << SIGUSR1 | 1u << SIGUSR2;
  o->tee.all = o->redirects.all = -1;
}

/* One command-line option at argv[*i]: finds its definition and value
 * (consuming the next argument if needed). */
static em_status next_option(int argc, char **argv, int *i, const optdef **def,
                             const char **value, char *valbuf, size_t valsize) {
  const char *a = argv[*i];
  *value = NULL;
  if (a[1] != '-') {
    /* -h, -m, -t3, -t 3, -r3 */
    const optdef *d = find_short(a[1]);
    if (!d || (!d->arg && a[2]))
      return em_set_error(EM_ERR_INVALID, "unknown option '%s'", a);
    *def = d;
    if (d->arg) {
      if (a[2]) *value = a + 2;
      else if (*i + 1 < argc) *value = argv[++*i];
      else return em_set_error(EM_ERR_INVALID, "-%c (--%s) needs a value", a[1], d->name);
    }
    return EM_OK;
  }
  char norm[64];
  const char *eq = strchr(a, '=');
  size_t len = eq ? (size_t)(eq - a) : strlen(a);
  if (len >= valsize) len = valsize - 1;
  memcpy(valbuf, a, len);
  valbuf[len] = 0;
  normalize(valbuf, norm, sizeof norm);
  const optdef *d = find_opt(norm);
  if (!d) {
    char hint[96];
    suggest(norm, hint, sizeof hint);
    return em_set_error(EM_ERR_INVALID, "unknown option '%s'%s", valbuf, hint);
  }
  *def = d;
  if (eq) *value = eq + 1;
  else if (d->arg) {
    if (*i + 1 >= argc) return em_set_error(EM_ERR_INVALID, "--%s needs a value", d->name);
    *value = argv[++*i];
  }
  return EM_OK;
}

static bool is_option(const char *a) { return a[0] == '-' && a[1] && strcmp(a, "--") != 0; }

em_status tr_options_parse(tr_options *o, int argc, char **argv) {
  set_defaults(o);
  char buf[128];
  /* pass 1: find --config (the command line overrides the file) */
  const char *config = NULL;
  int i = 1;
  for (; i < argc && is_option(argv[i]); i++) {
    const optdef *d;
    const char *v;
    TR_CHECK(next_option(argc, argv, &i, &d, &v, buf, sizeof buf));
    if (d->id == OPT_CONFIG) config = v;
  }
  if (config) {
    if (!*config) return em_set_error(EM_ERR_INVALID, "--config: empty file name");
    TR_CHECK(set_string(&o->config_path, config));
    TR_CHECK(tr_config_load(o, config));
  }
  /* pass 2: apply */
  for (i = 1; i < argc && is_option(argv[i]); i++) {
    const optdef *d;
    const char *v;
    TR_CHECK(next_option(argc, argv, &i, &d, &v, buf, sizeof buf));
    if (d->id == OPT_CONFIG) continue;
    TR_CHECK(apply(o, d, v, NULL));
  }
  if (i < argc && !strcmp(argv[i], "--")) i++;
  if (i < argc) {
    /* the command line's program replaces the config file's */
    for (int k = 0; k < o->nprog; k++) free(o->prog[k]);
    free(o->prog);
    o->nprog = 0;
    o->prog = calloc((size_t)(argc - i + 1), sizeof *o->prog);
    if (!o->prog) return em_set_error(EM_ERR_NOMEM, "out of memory");
    for (; i < argc; i++) {
      if (!(o->prog[o->nprog] = strdup(argv[i])))
        return em_set_error(EM_ERR_NOMEM, "out of memory");
      o->nprog++;
    }
  }
  return EM_OK;
}

void tr_options_free(tr_options *o) {
  for (int k = 0; k < o->nprog; k++) free(o->prog[k]);
  free(o->prog);
  free(o->rdzv_host);
  free(o->rdzv_id);
  free(o->master_addr);
  free(o->log_dir);
  free(o->config_path);
  free(o->run_id);
  tr_streamspec_free(&o->tee);
  tr_streamspec_free(&o->redirects);
  tr_rankset_free(&o->ranks_filter);
  tr_rankset_free(&o->local_ranks_filter);
  tr_hosts_free(o->slurm_hosts, o->nslurm_hosts);
  *o = (tr_options){0};
}

const char *tr_nnodes_str(const tr_options *o) {
  static __thread char buf[32];
  if (o->nnodes_min == o->nnodes_max) snprintf(buf, sizeof buf, "%d", o->nnodes_max);
  else snprintf(buf, sizeof buf, "%d:%d", o->nnodes_min, o->nnodes_max);
  return buf;
}

/* ---- resolving ------------------------------------------------------------ */

static char *random_id(void) {
  char *id = malloc(17);
  if (!id) return NULL;
  FILE *f = fopen("/dev/urandom", "rb");
  unsigned char b[8] = {0};
  if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
    unsigned long x = (unsigned long)getpid() ^ (unsigned long)time(NULL) * 2654435761ul;
    memcpy(b, &x, sizeof b < sizeof x ? sizeof b : sizeof x);
  }
  if (f) fclose(f);
  for (int i = 0; i < 8; i++) snprintf(id + 2 * i, 3, "%02x", b[i]);
  return id;
}

em_status tr_options_resolve(tr_options *o) {
  if (o->help || o->version) return EM_OK;
  if (o->nprog == 0)
    return em_set_error(EM_ERR_INVALID,
                        "no program to run: trainrun [options] (script.py | executable | -m "
                        "module) [args...]");
  if (o->module && o->no_python)
    return em_set_error(EM_ERR_INVALID,
                        "-m (--module) and --no-python cannot be combined: a module runs under "
                        "Python");
  if (o->standalone && o->nnodes_set && o->nnodes_max > 1)
    return em_set_error(EM_ERR_INVALID,
                        "--standalone is a one-node job but --nnodes is %s; drop one of them",
                        tr_nnodes_str(o));
  if (o->standalone && (o->rdzv_host || o->master_addr || o->master_port >= 0))
    return em_set_error(EM_ERR_INVALID,
                        "--standalone picks its own rendezvous endpoint (a free port on this "
                        "host); drop --rdzv/--master-addr/--master-port or --standalone");
  TR_CHECK(tr_cluster_detect(o));

  /* the endpoint: --rdzv, else --master-addr/--master-port */
  if (o->rdzv_host && o->master_addr && strcmp(o->rdzv_host, o->master_addr) != 0)
    return em_set_error(EM_ERR_INVALID,
                        "--rdzv names host '%s' but --master-addr names '%s': the agents' store "
                        "is also the workers' (MASTER_ADDR); give one of them",
                        o->rdzv_host, o->master_addr);
  if (o->rdzv_host && o->master_port >= 0 && o->rdzv_port != o->master_port)
    return em_set_error(EM_ERR_INVALID,
                        "--rdzv names port %d but --master-port names %d: the agents' store is "
                        "also the workers' (MASTER_PORT); give one of them",
                        o->rdzv_port, o->master_port);
  if (!o->rdzv_host && o->master_addr) {
    o->rdzv_host = strdup(o->master_addr);
    if (!o->rdzv_host) return em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  if (o->rdzv_port < 0 && o->master_port >= 0) o->rdzv_port = o->master_port;

  if (o->nnodes_max == 1) {
    if (o->node_rank > 0)
      return em_set_error(EM_ERR_INVALID,
                          "--node-rank %d but the job has 1 node (--nnodes): node ranks are 0 "
                          "to nnodes-1",
                          o->node_rank);
    o->node_rank = 0;
    if (!o->rdzv_host && !(o->rdzv_host = strdup("127.0.0.1")))
      return em_set_error(EM_ERR_NOMEM, "out of memory");
    if (o->rdzv_port < 0) o->rdzv_port = 0; /* a free port: nothing to configure */
  } else {
    if (!o->rdzv_host)
      return em_set_error(EM_ERR_INVALID,
                          "--nnodes %s needs the rendezvous endpoint, the same on every node: "
                          "--rdzv HOST:PORT (or --master-addr HOST --master-port PORT)",
                          tr_nnodes_str(o));
    if (o->rdzv_port < 0) o->rdzv_port = TR_DEFAULT_PORT;
    if (o->rdzv_port == 0)
      return em_set_error(EM_ERR_INVALID,
                          "port 0 (any free port) only works for a one-node job: with %d nodes "
                          "every node must know the port",
                          o->nnodes_max);
    if (o->node_rank >= o->nnodes_max)
      return em_set_error(EM_ERR_INVALID,
                          "--node-rank %d is out of range for %d nodes (node ranks are 0 to %d)",
                          o->node_rank, o->nnodes_max, o->nnodes_max - 1);
  }
  if (o->monitor_interval > o->heartbeat_timeout)
    return em_set_error(EM_ERR_INVALID,
                        "--heartbeat-timeout %g s is shorter than --monitor-interval %g s (the "
                        "heartbeat period): agents would be declared lost between beats",
                        o->heartbeat_timeout, o->monitor_interval);
  if (!o->run_id) {
    if (o->rdzv_id) o->run_id = strdup(o->rdzv_id);
    else if (o->nnodes_max == 1) o->run_id = random_id();
    else o->run_id = strdup("none");
    if (!o->run_id) return em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  return EM_OK;
}

/* ---- help ----------------------------------------------------------------- */

void tr_print_version(FILE *f) { fprintf(f, "trainrun (ember) %s\n", em_version()); }

void tr_print_help(FILE *f) {
  fputs(
      "usage: trainrun [options] (script.py | executable | -m module) [args...]\n"
      "\n"
      "Starts --nproc worker processes on this node, each with RANK, LOCAL_RANK,\n"
      "WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR,\n"
      "MASTER_PORT, EMBER_STORE_SECRET, TRAINRUN_RESTART_COUNT, TRAINRUN_MAX_RESTARTS,\n"
      "TRAINRUN_RUN_ID (and OMP_NUM_THREADS=1 unless set), prefixes their output\n"
      "with \"[rank N]: \", and stops them all when one fails. A .py script runs under\n"
      "the Python ember was built for (" EMBER_PYTHON_EXECUTABLE ") with ember\n"
      "importable; any other program runs as an executable (found on PATH).\n"
      "Options come before the program; everything after it is the program's.\n"
      "\n"
      "examples:\n"
      "  trainrun --nproc 8 train.py --epochs 2        # one node, 8 workers\n"
      "  trainrun --standalone --nproc auto -m mypkg.train\n"
      "  trainrun --nproc 4 --no-python ./train_c       # a C program\n"
      "  # two nodes (run on each; node 0 hosts the rendezvous at node0:29500):\n"
      "  trainrun --nnodes 2 --node-rank 0 --rdzv node0:29500 --nproc 8 train.py\n"
      "  trainrun --nnodes 2 --node-rank 1 --rdzv node0:29500 --nproc 8 train.py\n"
      "  srun -N4 trainrun --nproc 8 train.py           # Slurm: nodes from SLURM_*\n"
      "  trainrun --config configs/trainrun_single_node.yaml train.py\n"
      "\n"
      "the job:\n"
      "  --nproc N|auto|cpu|gpu   workers on this node (alias --nproc-per-node); auto =\n"
      "                           GPUs if any, else CPUs (default 1)\n"
      "  --nnodes N|MIN:MAX       nodes in the job; MIN:MAX starts with at least MIN\n"
      "                           (waiting --rdzv-conf last_call_timeout for more)\n"
      "  --node-rank R            this node's rank (default: assigned at rendezvous)\n"
      "  --rdzv HOST[:PORT]       rendezvous endpoint, hosted by node 0's trainrun (alias\n"
      "                           --rdzv-endpoint; default port 29400); the workers'\n"
      "                           MASTER_ADDR:MASTER_PORT\n"
      "  --master-addr HOST, --master-port PORT\n"
      "                           the same endpoint torchrun-style (default port 29500)\n"
      "  --standalone             one node, a free port: nothing to configure (also the\n"
      "                           default for a one-node job without an endpoint)\n"
      "  --rdzv-id ID             job id shared by all nodes (TRAINRUN_RUN_ID; under\n"
      "                           Slurm SLURM_JOB_ID)\n"
      "  --rdzv-timeout SECONDS   give up if the nodes have not all joined (default 600)\n"
      "  --rdzv-conf K=V,...      join_timeout, last_call_timeout (default 2),\n"
      "                           keep_alive_interval, keep_alive_max_attempt\n"
      "  --rdzv-backend c10d|static, --start-method spawn|fork|forkserver\n"
      "                           accepted for torchrun compatibility\n"
      "\n"
      "supervision:\n"
      "  --max-restarts N         restart the whole job (new rendezvous) up to N times\n"
      "                           after a failure (default 0)\n"
      "  --monitor-interval SECONDS  heartbeat period between nodes' agents (default 1)\n"
      "  --heartbeat-timeout SECONDS a node silent this long has failed (default 10)\n"
      "  --grace-period SECONDS   SIGTERM to SIGKILL when stopping workers (default 5)\n"
      "  --signals LIST           signals forwarded to the workers (default\n"
      "                           SIGINT,SIGTERM,SIGHUP,SIGUSR1,SIGUSR2; or none)\n"
      "\n"
      "output:\n"
      "  --log-dir DIR            also write each rank's output to\n"
      "                           DIR/attempt_<restart>/rank_<N>.log\n"
      "  --tee, -t 0|1|2|3        streams copied to the log files (1 stdout, 2 stderr,\n"
      "                           3 both; or per local rank: 0:3,1:1); default 3\n"
      "  --redirects, -r 0|1|2|3  streams sent only to the log files, not the console\n"
      "  --ranks-filter LIST      console output only from these ranks (e.g. 0,2-3)\n"
      "  --local-ranks-filter LIST  the same by local rank\n"
      "\n"
      "the program:\n"
      "  -m, --module             the program is a Python module (python -m)\n"
      "  --no-python              run the program directly, even a .py file\n"
      "\n"
      "  --config FILE            options from a YAML file (see configs/); the command\n"
      "                           line wins over it\n"
      "  -h, --help               this help\n"
      "  --version                trainrun's version\n"
      "\n"
      "Workers run in their own process groups and die with trainrun. On a failure the\n"
      "job stops everywhere, a summary names the first failed rank, and trainrun exits\n"
      "with its exit code (128+N for a signal N). Option names also take underscores\n"
      "(--nproc_per_node). TRAINRUN_PYTHON overrides the interpreter.\n",
      f);
}
