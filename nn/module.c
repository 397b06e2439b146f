/* The module object: ordered named parameters, buffers and children,
 * train/eval, named_parameters, state dicts, repr. */
#define _GNU_SOURCE /* vasprintf */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"

char *em__nn_fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *s = NULL;
  if (vasprintf(&s, f, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

typedef struct entry {
  char *name;
  em_tensor *t; /* NULL: declared but absent (bias=False) */
  bool persistent;
} entry;

typedef struct child {
  char *name;
  em_module *m;
} child;

struct em_module {
  atomic_int refcount;
  const em_module_ops *ops;
  void *impl;
  bool training;
  entry *params;
  int np, cap_p;
  entry *buffers;
  int nb, cap_b;
  child *children;
  int nc, cap_c;
};

em_module *em_module_create(const em_module_ops *ops, void *impl) {
  if (!ops || !ops->type_name) {
    if (ops && ops->destroy_impl) ops->destroy_impl(impl);
    return EM_FAIL(EM_ERR_INVALID, "module: ops with a type name are required");
  }
  em_module *m = calloc(1, sizeof *m);
  if (!m) {
    if (ops->destroy_impl) ops->destroy_impl(impl);
    return EM_FAIL(EM_ERR_NOMEM, "module: out of memory");
  }
  atomic_init(&m->refcount, 1);
  m->ops = ops;
  m->impl = impl;
  m->training = true;
  return m;
}

em_module *em_module_retain(em_module *m) {
  atomic_fetch_add_explicit(&m->refcount, 1, memory_order_relaxed);
  return m;
}

void em_module_release(em_module *m) {
  if (!m || atomic_fetch_sub_explicit(&m->refcount, 1, memory_order_acq_rel) != 1) return;
  for (int i = 0; i < m->np; i++) {
    free(m->params[i].name);
    em_tensor_release(m->params[i].t);
  }
  for (int i = 0; i < m->nb; i++) {
    free(m->buffers[i].name);
    em_tensor_release(m->buffers[i].t);
  }
  for (int i = 0; i < m->nc; i++) {
    free(m->children[i].name);
    em_module_release(m->children[i].m);
  }
  free(m->params), free(m->buffers), free(m->children);
  if (m->ops->destroy_impl) m->ops->destroy_impl(m->impl);
  free(m);
}

void *em_module_impl(em_module *m) { return m->impl; }
const char *em_module_type_name(const em_module *m) { return m->ops->type_name; }

/* ---- registration ----------------------------------------------------------- */

static int find_entry(const entry *e, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(e[i].name, name) == 0) return i;
  return -1;
}
static int find_child(const em_module *m, const char *name) {
  for (int i = 0; i < m->nc; i++)
    if (strcmp(m->children[i].name, name) == 0) return i;
  return -1;
}

/* kind: 0 parameter, 1 buffer, 2 module */
static em_status check_name(em_module *m, const char *what, const char *name, int kind) {
  if (!name || !*name)
    return em__set_error(EM_ERR_INVALID, "register_%s: the name can't be empty", what);
  if (strchr(name, '.'))
    return em__set_error(EM_ERR_INVALID, "register_%s: the name can't contain \".\", got \"%s\"",
                         what, name);
  if ((kind != 0 && find_entry(m->params, m->np, name) >= 0) ||
      (kind != 1 && find_entry(m->buffers, m->nb, name) >= 0) ||
      (kind != 2 && find_child(m, name) >= 0))
    return em__set_error(EM_ERR_INVALID, "register_%s: attribute '%s' already exists in %s", what,
                         name, m->ops->type_name);
  return EM_OK;
}

static em_status put_entry(entry **list, int *n, int *cap, const char *name, em_tensor *t,
                           bool persistent) {
  int i = find_entry(*list, *n, name);
  if (i >= 0) {
    em_tensor *old = (*list)[i].t;
    (*list)[i].t = t ? em_tensor_retain(t) : NULL;
    (*list)[i].persistent = persistent;
    em_tensor_release(old);
    return EM_OK;
  }
  if (*n == *cap) {
    int nc = *cap ? *cap * 2 : 4;
    entry *ne = realloc(*list, sizeof *ne * (size_t)nc);
    if (!ne) return em__set_error(EM_ERR_NOMEM, "module: out of memory");
    *list = ne;
    *cap = nc;
  }
  char *nm = strdup(name);
  if (!nm) return em__set_error(EM_ERR_NOMEM, "module: out of memory");
  (*list)[*n] = (entry){nm, t ? em_tensor_retain(t) : NULL, persistent};
  (*n)++;
  return EM_OK;
}

em_status em_module_register_parameter(em_module *m, const char *name, em_tensor *t) {
  EM_CHECK(check_name(m, "parameter", name, 0));
  if (t) {
    if (!em_dtype_is_float((em_dtype)t->dtype))
      return em__set_error(EM_ERR_DTYPE, "register_parameter: only floating-point tensors can be "
                           "parameters (\"%s\" is %s)", name, em_dtype_name((em_dtype)t->dtype));
    if (!em_tensor_is_leaf(t))
      return em__set_error(EM_ERR_INVALID, "register_parameter: cannot assign a non-leaf tensor "
                           "as parameter \"%s\"; detach() it first", name);
    EM_CHECK(em_tensor_set_requires_grad(t, true));
  }
  return put_entry(&m->params, &m->np, &m->cap_p, name, t, true);
}

em_status em_module_register_buffer(em_module *m, const char *name, em_tensor *t,
                                    bool persistent) {
  EM_CHECK(check_name(m, "buffer", name, 1));
  return put_entry(&m->buffers, &m->nb, &m->cap_b, name, t, persistent);
}

em_status em_module_register_module(em_module *m, const char *name, em_module *c) {
  em_status st = check_name(m, "module", name, 2);
  if (!st && !c) st = em__set_error(EM_ERR_INVALID, "register_module: module \"%s\" is NULL", name);
  if (!st && c == m) st = em__set_error(EM_ERR_INVALID, "register_module: a module can't contain itself");
  if (st) {
    em_module_release(c);
    return st;
  }
  int i = find_child(m, name);
  if (i >= 0) {
    em_module_release(m->children[i].m);
    m->children[i].m = c;
    return EM_OK;
  }
  if (m->nc == m->cap_c) {
    int nc = m->cap_c ? m->cap_c * 2 : 4;
    child *n = realloc(m->children, sizeof *n * (size_t)nc);
    if (!n) {
      em_module_release(c);
      return em__set_error(EM_ERR_NOMEM, "module: out of memory");
    }
    m->children = n;
    m->cap_c = nc;
  }
  char *nm = strdup(name);
  if (!nm) {
    em_module_release(c);
    return em__set_error(EM_ERR_NOMEM, "module: out of memory");
  }
  m->children[m->nc++] = (child){nm, c};
  return EM_OK;
}

em_tensor *em_module_parameter(em_module *m, const char *name) {
  int i = find_entry(m->params, m->np, name);
  return i >= 0 ? m->params[i].t : NULL;
}
em_tensor *em_module_buffer(em_module *m, const char *name) {
  int i = find_entry(m->buffers, m->nb, name);
  return i >= 0 ? m->buffers[i].t : NULL;
}
em_module *em_module_child(em_module *m, const char *name) {
  int i = find_child(m, name);
  return i >= 0 ? m->children[i].m : NULL;
}
int em_module_num_children(const em_module *m) { return m->nc; }
em_module *em_module_child_at(em_module *m, int i) {
  return i >= 0 && i < m->nc ? m->children[i].m : NULL;
}
const char *em_module_child_name_at(const em_module *m, int i) {
  return i >= 0 && i < m->nc ? m->children[i].name : NULL;
}

em_status em_module_set_tensor(em_module *m, const char *path, em_tensor *t) {
  const char *dot;
  while ((dot = strchr(path, '.'))) {
    char part[256];
    size_t len = (size_t)(dot - path);
    if (len >= sizeof part) return em__set_error(EM_ERR_INVALID, "set_tensor: path part too long");
    memcpy(part, path, len);
    part[len] = '\0';
    em_module *c = em_module_child(m, part);
    if (!c) return em__set_error(EM_ERR_INVALID, "set_tensor: %s has no submodule \"%s\"",
                                 m->ops->type_name, part);
    m = c;
    path = dot + 1;
  }
  entry *e = NULL;
  int i = find_entry(m->params, m->np, path);
  bool is_param = i >= 0;
  if (is_param) e = &m->params[i];
  else if ((i = find_entry(m->buffers, m->nb, path)) >= 0) e = &m->buffers[i];
  if (!e) return em__set_error(EM_ERR_INVALID, "set_tensor: %s has no parameter or buffer \"%s\"",
                               m->ops->type_name, path);
  if (e->t && t) {
    bool same = e->t->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = e->t->shape[d] == t->shape[d];
    if (!same)
      return em__set_error(EM_ERR_SHAPE, "set_tensor: \"%s\" has shape %s, the new tensor %s",
                           path, em__tshape(e->t), em__tshape(t));
  }
  if (is_param && t) EM_CHECK(em_tensor_set_requires_grad(t, true));
  em_tensor *old = e->t;
  e->t = t ? em_tensor_retain(t) : NULL;
  em_tensor_release(old);
  return EM_OK;
}

/* ---- running ---------------------------------------------------------------- */

em_tensor *em_module_forward_n(em_module *m, int nin, em_tensor *const *in) {
  if (!m) return EM_FAIL(EM_ERR_INVALID, "forward: NULL module");
  if (!m->ops->forward)
    return EM_FAIL(EM_ERR_NOTIMPL, "Module [%s] is missing the required \"forward\" function",
                   m->ops->type_name);
  for (int i = 0; i < nin; i++)
    if (!in[i]) return EM_FAIL(EM_ERR_INVALID, "%s.forward: input %d is NULL", m->ops->type_name, i);
  return m->ops->forward(m, nin, in);
}

em_tensor *em_module_forward(em_module *m, em_tensor *x) { return em_module_forward_n(m, 1, &x); }

void em_module_train(em_module *m, bool training) {
  m->training = training;
  for (int i = 0; i < m->nc; i++) em_module_train(m->children[i].m, training);
}
bool em_module_is_training(const em_module *m) { return m->training; }

em_status em_module_apply(em_module *m, em_status (*fn)(em_module *m, void *ctx), void *ctx) {
  for (int i = 0; i < m->nc; i++) EM_CHECK(em_module_apply(m->children[i].m, fn, ctx));
  return fn(m, ctx);
}

/* ---- named lists -------------------------------------------------------------- */

void em_named_tensors_free(em_named_tensors *l) {
  if (!l) return;
  for (int i = 0; i < l->n; i++) {
    free(l->names[i]);
    em_tensor_release(l->tensors[i]);
  }
  free(l->names);
  free(l->tensors);
  l->n = 0;
  l->names = NULL;
  l->tensors = NULL;
}

typedef struct collector {
  em_named_tensors *out;
  int cap;
  bool dedupe;
} collector;

static em_status collect_add(collector *c, const char *prefix, const char *name, em_tensor *t,
                             bool alias) {
  em_named_tensors *l = c->out;
  if (c->dedupe)
    for (int i = 0; i < l->n; i++)
      if (l->tensors[i] == t || (alias && l->tensors[i]->storage == t->storage &&
                                 l->tensors[i]->offset == t->offset)) return EM_OK;
  if (l->n == c->cap) {
    int nc = c->cap ? c->cap * 2 : 16;
    char **nn = realloc(l->names, sizeof *nn * (size_t)nc);
    if (nn) l->names = nn;
    em_tensor **nt = realloc(l->tensors, sizeof *nt * (size_t)nc);
    if (nt) l->tensors = nt;
    if (!nn || !nt) return em__set_error(EM_ERR_NOMEM, "named_parameters: out of memory");
    c->cap = nc;
  }
  size_t len = strlen(prefix) + strlen(name) + 1;
  char *full = malloc(len);
  if (!full) return em__set_error(EM_ERR_NOMEM, "named_parameters: out of memory");
  snprintf(full, len, "%s%s", prefix, name);
  em_tensor *v = alias ? em_tensor_detach(t) : em_tensor_retain(t);
  if (!v) {
    free(full);
    return em_last_status();
  }
  l->names[l->n] = full;
  l->tensors[l->n++] = v;
  return EM_OK;
}

/* what: 1 parameters, 2 buffers, 3 state dict (parameters + persistent
 * buffers, as detached aliases, module by module) */
static em_status walk(em_module *m, const char *prefix, int what, collector *c) {
  if (what == 1 || what == 3)
    for (int i = 0; i < m->np; i++)
      if (m->params[i].t) EM_CHECK(collect_add(c, prefix, m->params[i].name, m->params[i].t, what == 3));
  if (what == 2 || what == 3)
    for (int i = 0; i < m->nb; i++)
      if (m->buffers[i].t && (what == 2 || m->buffers[i].persistent))
        EM_CHECK(collect_add(c, prefix, m->buffers[i].name, m->buffers[i].t, what == 3));
  for (int i = 0; i < m->nc; i++) {
    size_t len = strlen(prefix) + strlen(m->children[i].name) + 2;
    char *p = malloc(len);
    if (!p) return em__set_error(EM_ERR_NOMEM, "named_parameters: out of memory");
    snprintf(p, len, "%s%s.", prefix, m->children[i].name);
    em_status st = walk(m->children[i].m, p, what, c);
    free(p);
    EM_CHECK(st);
  }
  return EM_OK;
}

static em_status named(em_module *m, int what, em_named_tensors *out) {
  out->n = 0;
  out->names = NULL;
  out->tensors = NULL;
  collector c = {out, 0, what != 3};
  em_status st = walk(m, "", what, &c);
  if (st) em_named_tensors_free(out);
  return st;
}

em_status em_module_named_parameters(em_module *m, em_named_tensors *out) {
  return named(m, 1, out);
}
em_status em_module_named_buffers(em_module *m, em_named_tensors *out) { return named(m, 2, out); }

int64_t em_module_num_parameters(em_module *m) {
  em_named_tensors l;
  if (em_module_named_parameters(m, &l)) return -1;
  int64_t total = 0;
  for (int i = 0; i < l.n; i++) total += l.tensors[i]->numel;
  em_named_tensors_free(&l);
  return total;
}

em_status em_module_zero_grad(em_module *m, bool set_to_none) {
  em_named_tensors l;
  EM_CHECK(em_module_named_parameters(m, &l));
  em_status st = EM_OK;
  for (int i = 0; i < l.n && !st; i++) {
    if (set_to_none) {
      st = em_tensor_set_grad(l.tensors[i], NULL);
    } else {
      em_tensor *g = em_tensor_grad(l.tensors[i]);
      if (g) {
        bool prev = em_set_grad_enabled(false);
        st = em_tensor_zero_(g);
        em_set_grad_enabled(prev);
        em_tensor_release(g);
      }
    }
  }
  em_named_tensors_free(&l);
  return st;
}

/* ---- state dicts ------------------------------------------------------------------ */

struct em_state_dict {
  int n, cap;
  char **names;
  em_tensor **tensors;
};

em_state_dict *em_state_dict_create(void) {
  em_state_dict *sd = calloc(1, sizeof *sd);
  if (!sd) return EM_FAIL(EM_ERR_NOMEM, "state_dict: out of memory");
  return sd;
}

void em_state_dict_free(em_state_dict *sd) {
  if (!sd) return;
  for (int i = 0; i < sd->n; i++) {
    free(sd->names[i]);
    em_tensor_release(sd->tensors[i]);
  }
  free(sd->names);
  free(sd->tensors);
  free(sd);
}

static int sd_find(const em_state_dict *sd, const char *name) {
  for (int i = 0; i < sd->n; i++)
    if (strcmp(sd->names[i], name) == 0) return i;
  return -1;
}

em_status em_state_dict_set(em_state_dict *sd, const char *name, em_tensor *t) {
  if (!name || !t) return em__set_error(EM_ERR_INVALID, "state_dict: NULL name or tensor");
  int i = sd_find(sd, name);
  if (i >= 0) {
    em_tensor *old = sd->tensors[i];
    sd->tensors[i] = em_tensor_retain(t);
    em_tensor_release(old);
    return EM_OK;
  }
  if (sd->n == sd->cap) {
    int nc = sd->cap ? sd->cap * 2 : 16;
    char **nn = realloc(sd->names, sizeof *nn * (size_t)nc);
    if (nn) sd->names = nn;
    em_tensor **nt = realloc(sd->tensors, sizeof *nt * (size_t)nc);
    if (nt) sd->tensors = nt;
    if (!nn || !nt) return em__set_error(EM_ERR_NOMEM, "state_dict: out of memory");
    sd->cap = nc;
  }
  char *nm = strdup(name);
  if (!nm) return em__set_error(EM_ERR_NOMEM, "state_dict: out of memory");
  sd->names[sd->n] = nm;
  sd->tensors[sd->n++] = em_tensor_retain(t);
  return EM_OK;
}

em_tensor *em_state_dict_get(const em_state_dict *sd, const char *name) {
  int i = sd_find(sd, name);
  return i >= 0 ? sd->tensors[i] : NULL;
}
int em_state_dict_size(const em_state_dict *sd) { return sd->n; }
const char *em_state_dict_name_at(const em_state_dict *sd, int i) {
  return i >= 0 && i < sd->n ? sd->names[i] : NULL;
}
em_tensor *em_state_dict_tensor_at(const em_state_dict *sd, int i) {
  return i >= 0 && i < sd->n ? sd->tensors[i] : NULL;
}

em_status em_state_dict_merge(em_state_dict *dst, const em_state_dict *src, const char *prefix) {
  for (int i = 0; i < src->n; i++) {
    size_t len = strlen(prefix ? prefix : "") + strlen(src->names[i]) + 1;
    char *nm = malloc(len);
    if (!nm) return em__set_error(EM_ERR_NOMEM, "state_dict: out of memory");
    snprintf(nm, len, "%s%s", prefix ? prefix : "", src->names[i]);
    em_status st = em_state_dict_set(dst, nm, src->tensors[i]);
    free(nm);
    EM_CHECK(st);
  }
  return EM_OK;
}

em_state_dict *em_module_state_dict(em_module *m) {
  em_named_tensors l;
  if (named(m, 3, &l)) return NULL;
  em_state_dict *sd = em_state_dict_create();
  for (int i = 0; sd && i < l.n; i++)
    if (em_state_dict_set(sd, l.names[i], l.tensors[i])) {
      em_state_dict_free(sd);
      sd = NULL;
    }
  em_named_tensors_free(&l);
  return sd;
}

/* A growing string for messages and reprs. */
typedef struct sbuf {
  char *s;
  size_t n, cap;
  bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0) return;
  if (b->n + (size_t)need + 1 > b->cap) {
    size_t nc = (b->cap ? b->cap * 2 : 256) + (size_t)need;
    char *ns = realloc(b->s, nc);
    if (!ns) {
      b->oom = true;
      return;
    }
    b->s = ns;
    b->cap = nc;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)need;
}

em_status em_module_load_state_dict(em_module *m, const em_state_dict *sd, bool strict) {
  em_named_tensors own;
  EM_CHECK(named(m, 3, &own));
  sbuf missing = {0}, mismatch = {0}, unexpected = {0};
  int nmissing = 0, nmismatch = 0, nunexpected = 0;
  for (int i = 0; i < own.n; i++) {
    em_tensor *src = em_state_dict_get(sd, own.names[i]);
    if (!src) {
      sb_printf(&missing, "%s\"%s\"", nmissing++ ? ", " : "", own.names[i]);
      continue;
    }
    em_tensor *dst = own.tensors[i];
    bool same = src->ndim == dst->ndim;
    for (int d = 0; same && d < dst->ndim; d++) same = src->shape[d] == dst->shape[d];
    if (!same)
      sb_printf(&mismatch,
                "\n\tsize mismatch for %s: copying a param with shape %s from checkpoint, the "
                "shape in current model is %s.",
                own.names[i], em__tshape(src), em__tshape(dst)),
          nmismatch++;
  }
  for (int i = 0; i < sd->n; i++) {
    bool known = false;
    for (int k = 0; k < own.n && !known; k++) known = strcmp(own.names[k], sd->names[i]) == 0;
    if (!known) sb_printf(&unexpected, "%s\"%s\"", nunexpected++ ? ", " : "", sd->names[i]);
  }
  em_status st = EM_OK;
  if (missing.oom || mismatch.oom || unexpected.oom) {
    st = em__set_error(EM_ERR_NOMEM, "load_state_dict: out of memory");
  } else if (nmismatch || (strict && (nmissing || nunexpected))) {
    st = em__set_error(EM_ERR_INVALID, "Error(s) in loading state_dict for %s:%s%s%s%s%s%s%s",
                       m->ops->type_name, strict && nunexpected ? "\n\tUnexpected key(s) in state_dict: " : "",
                       strict && nunexpected ? unexpected.s : "", strict && nunexpected ? ". " : "",
                       strict && nmissing ? "\n\tMissing key(s) in state_dict: " : "",
                       strict && nmissing ? missing.s : "", strict && nmissing ? ". " : "",
                       nmismatch ? mismatch.s : "");
  } else {
    bool prev = em_set_grad_enabled(false);
    for (int i = 0; i < own.n && !st; i++) {
      em_tensor *src = em_state_dict_get(sd, own.names[i]);
      if (src) st = em_tensor_copy_(own.tensors[i], src);
      if (st) em__prefix_error("load_state_dict: %s", own.names[i]);
    }
    em_set_grad_enabled(prev);
  }
  free(missing.s), free(mismatch.s), free(unexpected.s);
  em_named_tensors_free(&own);
  return st;
}

/* ---- repr ----------------------------------------------------------------------------- */

static void repr_into(em_module *m, sbuf *b, int indent) {
  char *extra = m->ops->extra_repr ? m->ops->extra_repr(m) : NULL;
  sb_printf(b, "%s(", m->ops->type_name);
  if (m->nc == 0) {
    sb_printf(b, "%s)", extra ? extra : "");
    free(extra);
    return;
  }
  if (extra && *extra) sb_printf(b, "\n%*s%s", indent + 2, "", extra);
  free(extra);
  for (int i = 0; i < m->nc; i++) {
    sb_printf(b, "\n%*s(%s): ", indent + 2, "", m->children[i].name);
    repr_into(m->children[i].m, b, indent + 2);
  }
  sb_printf(b, "\n%*s)", indent, "");
}

char *em_module_repr(em_module *m) {
  sbuf b = {0};
  repr_into(m, &b, 0);
  if (b.oom) {
    free(b.s);
    return EM_FAIL(EM_ERR_NOMEM, "repr: out of memory");
  }
  return b.s;
}
