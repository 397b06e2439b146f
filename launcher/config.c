/* --config FILE: trainrun's options from a YAML file.
 *
 * YAML rather than JSON because launch configs are written and commented by
 * hand (a JSON file cannot say why a timeout is 30 s); libyaml is the
 * reference C implementation (PyYAML's own C core, in Debian as libyaml),
 * small, and parses into a document tree we can walk with line numbers for
 * every message. The file is a mapping whose keys are the long option names
 * (dashes or underscores):
 *
 *     nproc: 4
 *     max-restarts: 2
 *     signals: [SIGINT, SIGTERM]      # list options take sequences
 *     rdzv-conf: {join_timeout: 60}   # and rdzv-conf a mapping
 *     program: train.py               # what to run, unless the command
 *     args: [--epochs, "2"]           #   line names a program
 *     module: mypkg.train             # or: python -m mypkg.train
 *
 * Every value goes through tr_options_set, so a file accepts exactly what
 * the command line does and its errors read "--config f.yaml:3: --nproc:
 * ...".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "launcher/launcher_impl.h"

typedef struct cfg {
  tr_options *o;
  const char *path;
  yaml_document_t *doc;
  char origin[512];
} cfg;

static const char *at(cfg *c, yaml_node_t *n) {
  snprintf(c->origin, sizeof c->origin, "--config %s:%zu", c->path,
           (size_t)n->start_mark.line + 1);
  return c->origin;
}

static const char *scalar(yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A sequence of scalars joined with commas, or a mapping as k=v pairs. */
static em_status join(cfg *c, yaml_node_t *n, const char *key, char **out) {
  size_t cap = 64, len = 0;
  char *s = malloc(cap);
  if (!s) return em_set_error(EM_ERR_NOMEM, "out of memory");
  s[0] = 0;
  size_t count = n->type == YAML_SEQUENCE_NODE
                     ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)
                     : (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
  for (size_t i = 0; i < count; i++) {
    const char *a, *b = NULL;
    yaml_node_t *item;
    if (n->type == YAML_SEQUENCE_NODE) {
      item = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
      a = scalar(item);
    } else {
      yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
      item = yaml_document_get_node(c->doc, p->key);
      a = scalar(item);
      yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
      b = scalar(v);
      if (!b) item = v;
    }
    if (!a || (n->type == YAML_MAPPING_NODE && !b)) {
      free(s);
      return em_set_error(EM_ERR_INVALID, "%s: %s: expected plain values in the %s",
                          at(c, item ? item : n), key,
                          n->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
    }
    size_t need = len + strlen(a) + (b ? strlen(b) + 1 : 0) + 2;
    if (need > cap) {
      while (cap < need) cap *= 2;
      char *t = realloc(s, cap);
      if (!t) {
        free(s);
        return em_set_error(EM_ERR_NOMEM, "out of memory");
      }
      s = t;
    }
    len += (size_t)sprintf(s + len, "%s%s%s%s", i ? "," : "", a, b ? "=" : "", b ? b : "");
  }
  *out = s;
  return EM_OK;
}

static em_status set_program(cfg *c, const char *prog, yaml_node_t *args, yaml_node_t *where) {
  tr_options *o = c->o;
  size_t nargs = 0;
  if (args) {
    if (args->type != YAML_SEQUENCE_NODE)
      return em_set_error(EM_ERR_INVALID, "%s: args: expected a list (args: [--epochs, \"2\"])",
                          at(c, args));
    nargs = (size_t)(args->data.sequence.items.top - args->data.sequence.items.start);
  }
  if (!prog)
    return em_set_error(EM_ERR_INVALID, "%s: args given without a program (program: train.py)",
                        at(c, where));
  char **v = calloc(nargs + 2, sizeof *v);
  if (!v) return em_set_error(EM_ERR_NOMEM, "out of memory");
  int n = 0;
  em_status st = EM_OK;
  if (!(v[n++] = strdup(prog))) st = em_set_error(EM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; !st && i < nargs; i++) {
    yaml_node_t *it = yaml_document_get_node(c->doc, args->data.sequence.items.start[i]);
    const char *a = scalar(it);
    if (!a) st = em_set_error(EM_ERR_INVALID, "%s: args: expected plain values", at(c, it));
    else if (!(v[n++] = strdup(a))) st = em_set_error(EM_ERR_NOMEM, "out of memory");
  }
  if (st) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    return st;
  }
  for (int k = 0; k < o->nprog; k++) free(o->prog[k]);
  free(o->prog);
  o->prog = v;
  o->nprog = n;
  return EM_OK;
}

static bool same_key(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
    if (x != y) return false;
  }
  return *a == *b;
}

static em_status load_root(cfg *c, yaml_node_t *root) {
  if (!root) return EM_OK; /* an empty file */
  if (root->type != YAML_MAPPING_NODE)
    return em_set_error(EM_ERR_INVALID,
                        "%s: expected a mapping of option names to values (nproc: 4)",
                        at(c, root));
  yaml_node_pair_t *pairs = root->data.mapping.pairs.start;
  size_t np = (size_t)(root->data.mapping.pairs.top - pairs);
  const char *program = NULL, *module = NULL;
  yaml_node_t *args = NULL, *prog_node = NULL;
  for (size_t i = 0; i < np; i++) {
    yaml_node_t *k = yaml_document_get_node(c->doc, pairs[i].key);
    yaml_node_t *v = yaml_document_get_node(c->doc, pairs[i].value);
    const char *key = scalar(k);
    if (!key) return em_set_error(EM_ERR_INVALID, "%s: option names must be plain text", at(c, k));
    for (size_t j = 0; j < i; j++) {
      const char *other = scalar(yaml_document_get_node(c->doc, pairs[j].key));
      if (other && same_key(other, key))
        return em_set_error(EM_ERR_INVALID, "%s: '%s' is given twice", at(c, k), key);
    }
    if (same_key(key, "program") || same_key(key, "script")) {
      if (!(program = scalar(v)))
        return em_set_error(EM_ERR_INVALID, "%s: %s: expected a file or command name", at(c, v),
                            key);
      prog_node = v;
      continue;
    }
    if (same_key(key, "args")) {
      args = v;
      continue;
    }
    if (same_key(key, "module") && scalar(v)) {
      const char *m = scalar(v);
      if (strcasecmp(m, "true") && strcasecmp(m, "false") && strcasecmp(m, "yes") &&
          strcasecmp(m, "no") && strcmp(m, "1") && strcmp(m, "0")) {
        module = m; /* module: mypkg.train */
        prog_node = v;
        continue;
      }
    }
    char *joined = NULL;
    const char *value = scalar(v);
    if (!value) {
      TR_CHECK(join(c, v, key, &joined));
      value = joined;
    }
    em_status st = tr_options_set(c->o, key, value, at(c, k));
    free(joined);
    TR_CHECK(st);
  }
  if (program && module)
    return em_set_error(EM_ERR_INVALID,
                        "%s: give either program (a script or executable) or module (a Python "
                        "module name), not both",
                        at(c, prog_node));
  if (module) {
    c->o->module = true;
    program = module;
  }
  if (program || args) TR_CHECK(set_program(c, program, args, args ? args : prog_node));
  return EM_OK;
}

em_status tr_config_load(tr_options *o, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return em_set_error(EM_ERR_INVALID, "--config %s: %s", path, strerror(errno));
  yaml_parser_t parser;
  yaml_document_t doc;
  em_status st = EM_OK;
  if (!yaml_parser_initialize(&parser)) {
    fclose(f);
    return em_set_error(EM_ERR_NOMEM, "--config %s: out of memory", path);
  }
  yaml_parser_set_input_file(&parser, f);
  if (!yaml_parser_load(&parser, &doc)) {
    st = em_set_error(EM_ERR_INVALID, "--config %s:%zu:%zu: not valid YAML: %s%s%s", path,
                      (size_t)parser.problem_mark.line + 1,
                      (size_t)parser.problem_mark.column + 1,
                      parser.problem ? parser.problem : "parse error",
                      parser.context ? " " : "", parser.context ? parser.context : "");
    yaml_parser_delete(&parser);
    fclose(f);
    return st;
  }
  cfg c = {.o = o, .path = path, .doc = &doc};
  st = load_root(&c, yaml_document_get_root_node(&doc));
  yaml_document_delete(&doc);
  /* a second document in the file would be silently ignored: refuse it */
  if (!st) {
    yaml_document_t more;
    if (yaml_parser_load(&parser, &more)) {
      if (yaml_document_get_root_node(&more))
        st = em_set_error(EM_ERR_INVALID,
                          "--config %s: holds more than one YAML document; trainrun reads one",
                          path);
      yaml_document_delete(&more);
    }
  }
  yaml_parser_delete(&parser);
  fclose(f);
  return st;
}
