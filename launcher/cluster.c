/* Where trainrun runs: under Slurm's srun (SLURM_*), under mpirun
 * (OMPI_COMM_WORLD_*), or by hand; Slurm host lists; which addresses are
 * this machine's.
 *
 * Under srun every task is one trainrun agent: the job has SLURM_NTASKS
 * agents (usually one per node), the agent's rank is SLURM_PROCID, and the
 * rendezvous host is the first node of the step's node list, which holds
 * task 0 with Slurm's block and cyclic distributions. Options given on the
 * command line win; values that contradict Slurm are errors rather than a
 * silently different world.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "launcher/launcher_impl.h"

#define MAX_HOSTS (1u << 20)

/* ---- host lists -------------------------------------------------------------- */

typedef struct strv {
  char **v;
  size_t n, cap;
} strv;

static bool strv_push(strv *s, char *str) {
  if (!str) return false;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    char **v = realloc(s->v, cap * sizeof *v);
    if (!v) {
      free(str);
      return false;
    }
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = str;
  return true;
}

static void strv_free(strv *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  *s = (strv){0};
}

void tr_hosts_free(char **hosts, size_t n) {
  if (!hosts) return;
  for (size_t i = 0; i < n; i++) free(hosts[i]);
  free(hosts);
}

static em_status bad_list(const char *list, const char *why) {
  return em_set_error(EM_ERR_INVALID, "node list '%s': %s", list, why);
}

/* The bracket body "01-04,07" -> its numbers as strings, zero-padded to the
 * width of each range's lower bound (Slurm's rule). */
static em_status expand_brackets(const char *list, const char *p, size_t len, strv *out) {
  char *body = strndup(p, len);
  if (!body) return em_set_error(EM_ERR_NOMEM, "out of memory");
  em_status st = EM_OK;
  char *save = NULL;
  if (len == 0) {
    st = bad_list(list, "empty brackets '[]'");
    goto done;
  }
  for (char *tok = strtok_r(body, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *dash = strchr(tok, '-');
    const char *lo_s = tok, *hi_s = dash ? dash + 1 : tok;
    if (dash) *dash = 0;
    size_t lo_len = strlen(lo_s), hi_len = strlen(hi_s);
    bool ok = lo_len > 0 && hi_len > 0 && lo_len <= 18 && hi_len <= 18;
    for (const char *c = lo_s; ok && *c; c++) ok = isdigit((unsigned char)*c);
    for (const char *c = hi_s; ok && *c; c++) ok = isdigit((unsigned char)*c);
    if (!ok) {
      char why[160];
      snprintf(why, sizeof why, "'%s%s%s' in brackets is not a number or a range LO-HI", lo_s,
               dash ? "-" : "", dash ? hi_s : "");
      st = bad_list(list, why);
      goto done;
    }
    long long lo = atoll(lo_s), hi = atoll(hi_s);
    if (hi < lo) {
      char why[160];
      snprintf(why, sizeof why, "range %s-%s runs backwards", lo_s, hi_s);
      st = bad_list(list, why);
      goto done;
    }
    if ((unsigned long long)(hi - lo) >= MAX_HOSTS || out->n + (size_t)(hi - lo) >= MAX_HOSTS) {
      st = bad_list(list, "names more than 1048576 hosts");
      goto done;
    }
    for (long long v = lo; v <= hi; v++) {
      char num[32];
      snprintf(num, sizeof num, "%0*lld", (int)lo_len, v);
      if (!strv_push(out, strdup(num))) {
        st = em_set_error(EM_ERR_NOMEM, "out of memory");
        goto done;
      }
    }
  }
done:
  free(body);
  return st;
}

/* One entry ("rack[1-2]-node[01-02]") appended to out: the product of its
 * bracket groups, leftmost group outermost. */
static em_status expand_entry(const char *list, const char *e, size_t len, strv *out) {
  strv cur = {0}, next = {0}, alts = {0};
  em_status st = EM_OK;
  if (!strv_push(&cur, strdup(""))) return em_set_error(EM_ERR_NOMEM, "out of memory");
  size_t i = 0;
  while (i < len) {
    strv_free(&alts);
    if (e[i] == '[') {
      const char *close = memchr(e + i, ']', len - i);
      if (!close) {
        st = bad_list(list, "'[' without a closing ']'");
        goto done;
      }
      size_t blen = (size_t)(close - (e + i + 1));
      if (memchr(e + i + 1, '[', blen)) {
        st = bad_list(list, "nested '['");
        goto done;
      }
      if ((st = expand_brackets(list, e + i + 1, blen, &alts))) goto done;
      i = (size_t)(close - e) + 1;
    } else if (e[i] == ']') {
      st = bad_list(list, "']' without an opening '['");
      goto done;
    } else {
      size_t j = i;
      while (j < len && e[j] != '[' && e[j] != ']') j++;
      if (!strv_push(&alts, strndup(e + i, j - i))) {
        st = em_set_error(EM_ERR_NOMEM, "out of memory");
        goto done;
      }
      i = j;
    }
    if (cur.n * alts.n >= MAX_HOSTS) {
      st = bad_list(list, "names more than 1048576 hosts");
      goto done;
    }
    for (size_t a = 0; a < cur.n; a++)
      for (size_t b = 0; b < alts.n; b++) {
        size_t la = strlen(cur.v[a]), lb = strlen(alts.v[b]);
        char *s = malloc(la + lb + 1);
        if (s) {
          memcpy(s, cur.v[a], la);
          memcpy(s + la, alts.v[b], lb + 1);
        }
        if (!strv_push(&next, s)) {
          st = em_set_error(EM_ERR_NOMEM, "out of memory");
          goto done;
        }
      }
    strv_free(&cur);
    cur = next;
    next = (strv){0};
  }
  for (size_t a = 0; a < cur.n; a++) {
    if (!strv_push(out, cur.v[a])) {
      cur.v[a] = NULL;
      st = em_set_error(EM_ERR_NOMEM, "out of memory");
      goto done;
    }
    cur.v[a] = NULL;
  }
done:
  strv_free(&cur);
  strv_free(&next);
  strv_free(&alts);
  return st;
}

em_status tr_nodelist_expand(const char *list, char ***hosts, size_t *n) {
  *hosts = NULL;
  *n = 0;
  if (!list) return em_set_error(EM_ERR_INVALID, "node list is missing");
  strv out = {0};
  em_status st = EM_OK;
  size_t len = strlen(list);
  for (size_t k = 0; k < len; k++)
    if (isspace((unsigned char)list[k])) return bad_list(list, "contains white space");
  size_t start = 0;
  int depth = 0;
  for (size_t k = 0; k <= len; k++) {
    char c = list[k];
    if (c == '[') depth++;
    else if (c == ']') depth--;
    if (depth < 0) {
      st = bad_list(list, "']' without an opening '['");
      break;
    }
    if ((c == ',' && depth == 0) || c == 0) {
      if (c == 0 && depth > 0) {
        st = bad_list(list, "'[' without a closing ']'");
        break;
      }
      if (k == start) {
        st = bad_list(list, len ? "an empty host name (two commas in a row?)" : "it is empty");
        break;
      }
      if ((st = expand_entry(list, list + start, k - start, &out))) break;
      start = k + 1;
    }
  }
  if (st) {
    strv_free(&out);
    return st;
  }
  *hosts = out.v;
  *n = out.n;
  return EM_OK;
}

/* ---- this machine -------------------------------------------------------------- */

const char *tr_hostname(void) {
  static char name[256];
  if (!name[0]) {
    if (gethostname(name, sizeof name - 1) != 0) snprintf(name, sizeof name, "localhost");
    name[sizeof name - 1] = 0;
    char *dot = strchr(name, '.');
    if (dot && dot != name) *dot = 0;
  }
  return name;
}

static bool is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) ||
           (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return false;
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b) {
  if (a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET)
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
           ((const struct sockaddr_in *)b)->sin_addr.s_addr;
  if (a->sa_family == AF_INET6)
    return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                   &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
  return false;
}

bool tr_host_is_local(const char *host, char *err, size_t errsize) {
  if (err && errsize) err[0] = 0;
  if (!strcmp(host, tr_hostname()) || !strcmp(host, "localhost")) return true;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, NULL, &hints, &res);
  if (gai != 0) {
    if (err) snprintf(err, errsize, "cannot resolve '%s': %s", host, gai_strerror(gai));
    return false;
  }
  struct ifaddrs *ifs = NULL;
  bool local = false;
  if (getifaddrs(&ifs) != 0) ifs = NULL;
  for (struct addrinfo *ai = res; ai && !local; ai = ai->ai_next) {
    if (is_loopback(ai->ai_addr)) local = true;
    for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next)
      if (i->ifa_addr && same_addr(ai->ai_addr, i->ifa_addr)) local = true;
  }
  if (ifs) freeifaddrs(ifs);
  freeaddrinfo(res);
  return local;
}

/* ---- Slurm and mpirun ------------------------------------------------------------ */

static const char *env2(const char *a, const char *b) {
  const char *v = getenv(a);
  if ((!v || !*v) && b) v = getenv(b);
  return v && *v ? v : NULL;
}

static bool env_int(const char *name, const char *v, long lo, long *out, char *why,
                    size_t whysize) {
  char *end;
  errno = 0;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || *end || end == v || x < lo || x > (long)MAX_HOSTS) {
    snprintf(why, whysize, "%s='%s' is not a number >= %ld", name, v ? v : "", lo);
    return false;
  }
  *out = x;
  return true;
}

static em_status slurm_detect(tr_options *o, const char *job) {
  char why[256];
  const char *list_name = getenv("SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST"
                          : getenv("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST"
                                                         : "SLURM_NODELIST";
  const char *list = getenv(list_name);
  const char *nn_name = getenv("SLURM_STEP_NUM_NODES") ? "SLURM_STEP_NUM_NODES" : "SLURM_NNODES";
  const char *nn_s = getenv(nn_name);
  const char *nt_name = getenv("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS"
                        : getenv("SLURM_NTASKS")       ? "SLURM_NTASKS"
                                                       : "SLURM_NPROCS";
  const char *nt_s = getenv(nt_name);
  long nnodes, nodeid, procid, ntasks;
  if (!list)
    return em_set_error(EM_ERR_INVALID,
                        "inconsistent Slurm setup: SLURM_JOB_ID=%s is set but no node list "
                        "(SLURM_JOB_NODELIST)",
                        job);
  if (!env_int(nn_name, nn_s, 1, &nnodes, why, sizeof why) ||
      !env_int("SLURM_NODEID", getenv("SLURM_NODEID"), 0, &nodeid, why, sizeof why) ||
      !env_int("SLURM_PROCID", getenv("SLURM_PROCID"), 0, &procid, why, sizeof why))
    return em_set_error(EM_ERR_INVALID, "inconsistent Slurm setup (SLURM_JOB_ID=%s): %s", job,
                        why);
  if (nt_s) {
    if (!env_int(nt_name, nt_s, 1, &ntasks, why, sizeof why))
      return em_set_error(EM_ERR_INVALID, "inconsistent Slurm setup (SLURM_JOB_ID=%s): %s", job,
                          why);
  } else {
    ntasks = nnodes;
  }
  char **hosts = NULL;
  size_t nh = 0;
  if (tr_nodelist_expand(list, &hosts, &nh) != EM_OK) {
    char why[512];
    snprintf(why, sizeof why, "%s", em_last_error());
    return em_set_error(EM_ERR_INVALID, "Slurm's %s: %s", list_name, why);
  }
  em_status st = EM_OK;
  if ((long)nh != nnodes)
    st = em_set_error(EM_ERR_INVALID,
                      "inconsistent Slurm setup: %s=%ld but %s='%s' names %zu node%s", nn_name,
                      nnodes, list_name, list, nh, nh == 1 ? "" : "s");
  else if (nodeid >= nnodes)
    st = em_set_error(EM_ERR_INVALID,
                      "inconsistent Slurm setup: SLURM_NODEID=%ld but the step has %ld node%s "
                      "(%s)",
                      nodeid, nnodes, nnodes == 1 ? "" : "s", nn_name);
  else if (procid >= ntasks)
    st = em_set_error(EM_ERR_INVALID,
                      "inconsistent Slurm setup: SLURM_PROCID=%ld but the step has %ld task%s "
                      "(%s)",
                      procid, ntasks, ntasks == 1 ? "" : "s", nt_name);
  else if (ntasks < nnodes)
    st = em_set_error(EM_ERR_INVALID,
                      "inconsistent Slurm setup: %ld task%s (%s) on %ld nodes (%s)", ntasks,
                      ntasks == 1 ? "" : "s", nt_name, nnodes, nn_name);
  else if (o->standalone && ntasks > 1)
    st = em_set_error(EM_ERR_INVALID,
                      "--standalone under srun with %s=%ld: every task would run its own "
                      "one-node job; drop --standalone (trainrun reads the job from SLURM_*)",
                      nt_name, ntasks);
  else if (o->nnodes_set && (o->nnodes_min != ntasks || o->nnodes_max != ntasks))
    st = em_set_error(EM_ERR_INVALID,
                      "--nnodes %s but srun started %ld trainrun task%s (%s=%ld); drop "
                      "--nnodes under Slurm",
                      tr_nnodes_str(o), ntasks, ntasks == 1 ? "" : "s", nt_name, ntasks);
  else if (o->node_rank_set && o->node_rank != procid)
    st = em_set_error(EM_ERR_INVALID,
                      "--node-rank %d but this is Slurm task %ld (SLURM_PROCID); drop "
                      "--node-rank under Slurm",
                      o->node_rank, procid);
  if (st) {
    tr_hosts_free(hosts, nh);
    return st;
  }
  if (o->standalone) { /* one task: --standalone is harmless */
    tr_hosts_free(hosts, nh);
    return EM_OK;
  }
  o->env_source = "slurm";
  o->nnodes_min = o->nnodes_max = (int)ntasks;
  o->node_rank = (int)procid;
  if (!o->rdzv_host && !o->master_addr) {
    o->rdzv_host = strdup(hosts[0]);
    if (!o->rdzv_host) st = em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  if (o->rdzv_port < 0 && o->master_port >= 0) o->rdzv_port = o->master_port;
  if (o->rdzv_port < 0) {
    /* a port per job, so jobs sharing their first node do not collide
     * (the scheme PyTorch Lightning uses) */
    size_t jl = strlen(job);
    o->rdzv_port = 15000 + atoi(job + (jl > 4 ? jl - 4 : 0)) % 10000;
  }
  if (!st && !o->run_id) {
    o->run_id = strdup(o->rdzv_id ? o->rdzv_id : job);
    if (!o->run_id) st = em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  tr_hosts_free(o->slurm_hosts, o->nslurm_hosts);
  o->slurm_hosts = hosts;
  o->nslurm_hosts = nh;
  return st;
}

static em_status mpirun_detect(tr_options *o, const char *size_s) {
  char why[256];
  long size, rank;
  if (!env_int("OMPI_COMM_WORLD_SIZE", size_s, 1, &size, why, sizeof why) ||
      !env_int("OMPI_COMM_WORLD_RANK", getenv("OMPI_COMM_WORLD_RANK"), 0, &rank, why, sizeof why))
    return em_set_error(EM_ERR_INVALID, "inconsistent mpirun setup: %s", why);
  if (rank >= size)
    return em_set_error(EM_ERR_INVALID,
                        "inconsistent mpirun setup: OMPI_COMM_WORLD_RANK=%ld but "
                        "OMPI_COMM_WORLD_SIZE=%ld",
                        rank, size);
  if (size == 1) return EM_OK;
  if (o->standalone)
    return em_set_error(EM_ERR_INVALID,
                        "--standalone under mpirun with %ld processes: each would run its own "
                        "one-node job; drop --standalone",
                        size);
  if (o->nnodes_set && (o->nnodes_min != size || o->nnodes_max != size))
    return em_set_error(EM_ERR_INVALID,
                        "--nnodes %s but mpirun started %ld trainrun processes "
                        "(OMPI_COMM_WORLD_SIZE)",
                        tr_nnodes_str(o), size);
  if (o->node_rank_set && o->node_rank != rank)
    return em_set_error(EM_ERR_INVALID,
                        "--node-rank %d but this is mpirun rank %ld (OMPI_COMM_WORLD_RANK)",
                        o->node_rank, rank);
  if (!o->rdzv_host && !o->master_addr)
    return em_set_error(EM_ERR_INVALID,
                        "under mpirun with %ld processes trainrun needs --rdzv HOST:PORT naming "
                        "the host of mpirun rank 0 (mpirun does not tell)",
                        size);
  o->env_source = "mpirun";
  o->nnodes_min = o->nnodes_max = (int)size;
  o->node_rank = (int)rank;
  return EM_OK;
}

em_status tr_cluster_detect(tr_options *o) {
  /* a fully manual setup overrides whatever launched us */
  if (o->node_rank_set && (o->rdzv_host || o->master_addr) && o->nnodes_set) return EM_OK;
  const char *job = env2("SLURM_JOB_ID", "SLURM_JOBID");
  const char *step = env2("SLURM_STEP_ID", "SLURM_STEPID");
  if (job && step) return slurm_detect(o, job);
  const char *ompi = getenv("OMPI_COMM_WORLD_SIZE");
  if (ompi) return mpirun_detect(o, ompi);
  return EM_OK;
}
