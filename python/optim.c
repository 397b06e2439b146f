/* ember._C._Optimizer: the C optimizer (nn/optim.h) behind
 * ember.optim.SGD / Adam / AdamW / RMSprop / Adagrad.
 *
 * The Python optimizer keeps PyTorch's param_groups (a list of dicts whose
 * values users and schedulers change at will); the update itself runs in
 * C. Before each step, sync() reads every group's hyper-parameters from
 * its dict and compares them with the values the C optimizer holds (kept
 * here as a cache); a changed value goes in through em_optim_set_lr /
 * em_optim_set_option. In the common case a step costs a handful of dict
 * lookups and one C call.
 *
 * _Optimizer(kind, groups): kind "SGD" | "Adam" | "AdamW" | "RMSprop" |
 * "Adagrad"; groups a list of dicts with 'params' and every hyper-parameter
 * of that kind (the Python class fills in the defaults). */
#include <math.h>

#include "nn/nn.h"
#include "python/ember_py.h"

typedef enum { K_SGD, K_ADAM, K_ADAMW, K_RMSPROP, K_ADAGRAD } okind;

/* The hyper-parameters of each kind, in the order the cache holds them;
 * "betas" is a pair (two cache entries). The state dict name of an entry
 * is its key, except the pair, stored as one 2-element tensor. */
#define MAXH 9
static const char *const KEYS[5][MAXH] = {
    {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", NULL},
    {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", NULL},
    {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", NULL},
    {"lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize", NULL},
    {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize", NULL},
};
static const char *const KIND_NAMES[5] = {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad"};
static PyObject *key_objs[5][MAXH];
static PyObject *str_params;

typedef struct {
  PyObject_HEAD
  em_optimizer *opt;
  okind kind;
  int ng;
  double (*cache)[MAXH + 1]; /* per group, values as C holds them */
  int64_t numel;             /* all parameters' elements (GIL decision) */
} OptObject;

/* ---- reading a group dict ------------------------------------------------------------ */

/* Reads key k of group dict d into v[*j] (and v[*j + 1] for the pair),
 * advancing *j. */
static int read_key(okind kind, int k, PyObject *d, double *v, int *j) {
  PyObject *o = PyDict_GetItemWithError(d, key_objs[kind][k]);
  const char *name = KEYS[kind][k];
  if (!o) {
    if (!PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "param group has no '%s'", name);
    return -1;
  }
  if (strcmp(name, "betas") == 0) {
    PyObject *seq = PySequence_Fast(o, "betas must be a pair of floats");
    if (!seq) return -1;
    int rc = 0;
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
      PyErr_SetString(PyExc_ValueError, "betas must be a pair of floats");
      rc = -1;
    }
    for (int i = 0; i < 2 && !rc; i++)
      rc = emp_arg_double(PySequence_Fast_GET_ITEM(seq, i), KIND_NAMES[kind], "betas", &v[*j + i]);
    Py_DECREF(seq);
    *j += 2;
    return rc;
  }
  if (PyFloat_CheckExact(o)) {
    v[(*j)++] = PyFloat_AS_DOUBLE(o);
    return 0;
  }
  if (o == Py_True || o == Py_False) {
    v[(*j)++] = o == Py_True;
    return 0;
  }
  return emp_arg_double(o, KIND_NAMES[kind], name, &v[(*j)++]);
}

static int read_group(okind kind, PyObject *d, double *v) {
  if (!PyDict_Check(d)) {
    PyErr_SetString(PyExc_TypeError, "param group must be a dict");
    return -1;
  }
  int j = 0;
  for (int k = 0; KEYS[kind][k]; k++)
    if (read_key(kind, k, d, v, &j) < 0) return -1;
  return 0;
}

/* ---- options structs from values ------------------------------------------------------ */

typedef union {
  em_sgd_options sgd;
  em_adam_options adam;
  em_rmsprop_options rms;
  em_adagrad_options ada;
} anyopt;

/* The options struct for values v, and in c the values the C optimizer
 * will actually hold (C maps 0 to a default for some fields; lr must be
 * positive there while PyTorch accepts 0: those get a placeholder that
 * the first sync corrects). */
static void to_options(okind kind, const double *v, anyopt *o, double *c) {
  memset(o, 0, sizeof *o);
  int n = 0;
  for (int k = 0; KEYS[kind][k]; k++) n += strcmp(KEYS[kind][k], "betas") == 0 ? 2 : 1;
  memcpy(c, v, sizeof *c * (size_t)n);
  double lr = v[0] == 0 ? 1e-3 : v[0];
  c[0] = lr;
  switch (kind) {
    case K_SGD:
      o->sgd = (em_sgd_options){lr, v[1], v[2], v[3], v[4] != 0, v[5] != 0};
      break;
    case K_ADAM:
    case K_ADAMW:
      o->adam = (em_adam_options){.lr = lr, .beta1 = v[1], .beta2 = v[2], .eps = v[3],
                                  .weight_decay = v[4], .weight_decay_zero = v[4] == 0,
                                  .amsgrad = v[5] != 0, .maximize = v[6] != 0};
      if (v[1] == 0) c[1] = 0.9;
      if (v[2] == 0) c[2] = 0.999;
      if (v[3] == 0) c[3] = 1e-8;
      break;
    case K_RMSPROP:
      o->rms = (em_rmsprop_options){lr, v[1], v[2], v[3], v[4], v[5] != 0, v[6] != 0};
      if (v[1] == 0) c[1] = 0.99;
      if (v[2] == 0) c[2] = 1e-8;
      break;
    case K_ADAGRAD:
      o->ada = (em_adagrad_options){lr, v[1], v[2], v[3], v[4], v[5] != 0};
      if (v[4] == 0) c[4] = 1e-10;
      break;
  }
}

/* ---- syncing ------------------------------------------------------------------------------- */

/* Sets hyper-parameter KEYS[kind][k] (component q of betas) of group g. */
static int set_one(OptObject *self, int g, const char *key, int q, double value) {
  const char *name = strcmp(key, "betas") == 0 ? (q == 0 ? "beta1" : "beta2") : key;
  em_status st = strcmp(name, "lr") == 0 ? em_optim_set_lr(self->opt, g, value)
                                         : em_optim_set_option(self->opt, g, name, value);
  return st ? emp_raise_status(st) : 0;
}

static int sync_groups(OptObject *self, PyObject *groups) {
  if (!PyList_Check(groups) || PyList_GET_SIZE(groups) != self->ng) {
    PyErr_Format(PyExc_RuntimeError,
                 "%s: param_groups changed size (%zd groups, the optimizer has %d); use "
                 "add_param_group()",
                 KIND_NAMES[self->kind], PyList_Check(groups) ? PyList_GET_SIZE(groups) : -1,
                 self->ng);
    return -1;
  }
  for (int g = 0; g < self->ng; g++) {
    double v[MAXH + 1];
    if (read_group(self->kind, PyList_GET_ITEM(groups, g), v) < 0) return -1;
    double *c = self->cache[g];
    int j = 0;
    for (int k = 0; KEYS[self->kind][k]; k++) {
      const char *key = KEYS[self->kind][k];
      int w = strcmp(key, "betas") == 0 ? 2 : 1;
      for (int q = 0; q < w; q++, j++) {
        if (v[j] == c[j] || (isnan(v[j]) && isnan(c[j]))) continue;
        if (set_one(self, g, key, q, v[j]) < 0) return -1;
        c[j] = v[j];
      }
    }
  }
  return 0;
}

static int group_params(PyObject *d, PyObject **tup, em_tensor ***ts) {
  PyObject *p = PyDict_GetItemWithError(d, str_params);
  if (!p) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "param group has no 'params'");
    return -1;
  }
  *tup = PySequence_Tuple(p);
  if (!*tup) return -1;
  Py_ssize_t n = PyTuple_GET_SIZE(*tup);
  *ts = PyMem_Malloc(sizeof **ts * (size_t)(n + 1));
  if (!*ts) {
    Py_CLEAR(*tup);
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *o = PyTuple_GET_ITEM(*tup, i);
    if (!emp_is_tensor(o)) {
      PyErr_Format(PyExc_TypeError, "optimizer can only optimize Tensors, but one of the params is %s",
                   Py_TYPE(o)->tp_name);
      PyMem_Free(*ts);
      Py_CLEAR(*tup);
      return -1;
    }
    (*ts)[i] = emp_tensor(o);
  }
  return 0;
}

static int add_group(OptObject *self, PyObject *d) {
  double v[MAXH + 1], c[MAXH + 1];
  if (read_group(self->kind, d, v) < 0) return -1;
  PyObject *tup;
  em_tensor **ts;
  if (group_params(d, &tup, &ts) < 0) return -1;
  int n = (int)PyTuple_GET_SIZE(tup);
  anyopt o;
  to_options(self->kind, v, &o, c);
  double(*cache)[MAXH + 1] = PyMem_Realloc(self->cache, sizeof *cache * (size_t)(self->ng + 1));
  if (!cache) {
    PyMem_Free(ts);
    Py_DECREF(tup);
    PyErr_NoMemory();
    return -1;
  }
  self->cache = cache;
  em_status st = EM_OK;
  if (!self->opt) {
    switch (self->kind) {
      case K_SGD: self->opt = em_optim_sgd(n, ts, &o.sgd); break;
      case K_ADAM: self->opt = em_optim_adam(n, ts, &o.adam); break;
      case K_ADAMW: self->opt = em_optim_adamw(n, ts, &o.adam); break;
      case K_RMSPROP: self->opt = em_optim_rmsprop(n, ts, &o.rms); break;
      case K_ADAGRAD: self->opt = em_optim_adagrad(n, ts, &o.ada); break;
    }
    if (!self->opt) st = em_last_status();
  } else {
    st = em_optim_add_param_group(self->opt, n, ts, &o);
  }
  for (int i = 0; i < n && !st; i++) self->numel += ts[i]->numel;
  PyMem_Free(ts);
  Py_DECREF(tup);
  if (st) {
    const char *m = em_last_error();
    /* PyTorch's messages start at "Invalid ..."; C prefixes the kind */
    size_t kl = strlen(KIND_NAMES[self->kind]);
    if (strncmp(m, KIND_NAMES[self->kind], kl) == 0 && m[kl] == ':' && m[kl + 1] == ' ') m += kl + 2;
    PyErr_SetString(emp_exc_class(st), m);
    return -1;
  }
  memcpy(self->cache[self->ng], c, sizeof c);
  self->ng++;
  /* values C mapped to a default (or the lr placeholder): correct them */
  int gi = self->ng - 1, j = 0;
  for (int k = 0; KEYS[self->kind][k]; k++) {
    int w = strcmp(KEYS[self->kind][k], "betas") == 0 ? 2 : 1;
    for (int q = 0; q < w; q++, j++) {
      if (c[j] == v[j] || (isnan(c[j]) && isnan(v[j]))) continue;
      if (set_one(self, gi, KEYS[self->kind][k], q, v[j]) < 0) return -1;
      self->cache[gi][j] = v[j];
    }
  }
  return 0;
}

static void opt_dealloc(PyObject *s) {
  OptObject *self = (OptObject *)s;
  em_optim_free(self->opt);
  PyMem_Free(self->cache);
  Py_TYPE(s)->tp_free(s);
}

static PyObject *opt_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  const char *kind;
  PyObject *groups;
  if (!PyArg_ParseTuple(args, "sO!:_Optimizer", &kind, &PyList_Type, &groups)) return NULL;
  int k = -1;
  for (int i = 0; i < 5; i++)
    if (strcmp(kind, KIND_NAMES[i]) == 0) k = i;
  if (k < 0) return emp_raise_fmt(EM_ERR_INVALID, "_Optimizer: unknown kind %s", kind);
  OptObject *self = (OptObject *)tp->tp_alloc(tp, 0);
  if (!self) return NULL;
  self->kind = (okind)k;
  Py_ssize_t n = PyList_GET_SIZE(groups);
  if (n == 0) {
    Py_DECREF(self);
    return emp_raise_fmt(EM_ERR_INVALID, "optimizer got an empty parameter list");
  }
  for (Py_ssize_t i = 0; i < n; i++)
    if (add_group(self, PyList_GET_ITEM(groups, i)) < 0) {
      Py_DECREF(self);
      return NULL;
    }
  return (PyObject *)self;
}

/* ---- methods -------------------------------------------------------------------------------------- */

static PyObject *opt_add_param_group(PyObject *s, PyObject *d) {
  if (add_group((OptObject *)s, d) < 0) return NULL;
  Py_RETURN_NONE;
}

/* step(param_groups): sync, then one C update of every parameter. */
static PyObject *opt_step(PyObject *s, PyObject *groups) {
  OptObject *self = (OptObject *)s;
  if (sync_groups(self, groups) < 0) return NULL;
  em_status st;
  EMP_NOGIL_IF(self->numel > EMP_NOGIL_NUMEL, st = em_optim_step(self->opt));
  if (st) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *opt_sync(PyObject *s, PyObject *groups) {
  if (sync_groups((OptObject *)s, groups) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *opt_zero_grad(PyObject *s, PyObject *arg) {
  int none = PyObject_IsTrue(arg);
  if (none < 0) return NULL;
  if (em_optim_zero_grad(((OptObject *)s)->opt, none)) return emp_raise();
  Py_RETURN_NONE;
}

/* state_dict() -> list of (flat name, tensor) */
static PyObject *opt_state_dict(PyObject *s, PyObject *unused) {
  em_state_dict *sd = em_optim_state_dict(((OptObject *)s)->opt);
  if (!sd) return emp_raise();
  int n = em_state_dict_size(sd);
  PyObject *l = PyList_New(n);
  for (int i = 0; l && i < n; i++) {
    PyObject *t = emp_wrap_borrowed(em_state_dict_tensor_at(sd, i));
    PyObject *item = t ? Py_BuildValue("(sN)", em_state_dict_name_at(sd, i), t) : NULL;
    if (!item) Py_CLEAR(l);
    else PyList_SET_ITEM(l, i, item);
  }
  em_state_dict_free(sd);
  return l;
}

/* load_state_dict(list of (flat name, tensor), param_groups): the groups'
 * hyper-parameters are taken from the dicts (already updated by Python). */
static PyObject *opt_load_state_dict(PyObject *s, PyObject *const *args, Py_ssize_t nargs) {
  OptObject *self = (OptObject *)s;
  if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "_Optimizer.load_state_dict(entries, param_groups)");
    return NULL;
  }
  PyObject *entries = args[0], *groups = args[1];
  if (PyList_GET_SIZE(groups) != self->ng) {
    PyErr_Format(PyExc_ValueError,
                 "loaded state dict has a different number of parameter groups (%zd, the "
                 "optimizer has %d)",
                 PyList_GET_SIZE(groups), self->ng);
    return NULL;
  }
  em_state_dict *sd = em_state_dict_create();
  if (!sd) return emp_raise();
  double(*v)[MAXH + 1] = PyMem_Malloc(sizeof *v * (size_t)self->ng);
  int *gs = PyMem_Malloc(sizeof *gs * (size_t)self->ng);
  PyObject *ret = NULL;
  if (!v || !gs) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
    PyObject *it = PyList_GET_ITEM(entries, i);
    const char *name;
    PyObject *t;
    if (!PyArg_ParseTuple(it, "sO", &name, &t)) goto done;
    em_tensor *et;
    if (emp_arg_tensor(t, "load_state_dict", "state", &et) < 0) goto done;
    if (em_state_dict_set(sd, name, et)) {
      emp_raise();
      goto done;
    }
  }
  for (int g = 0; g < self->ng; g++) {
    gs[g] = g;
    if (read_group(self->kind, PyList_GET_ITEM(groups, g), v[g]) < 0) goto done;
    int j = 0;
    for (int k = 0; KEYS[self->kind][k]; k++) {
      char name[96];
      snprintf(name, sizeof name, "param_groups.%d.%s", g, KEYS[self->kind][k]);
      em_tensor *t;
      if (strcmp(KEYS[self->kind][k], "betas") == 0) {
        double b[2] = {v[g][j], v[g][j + 1]};
        t = em_tensor_from_data(b, 1, (int64_t[]){2}, EM_FLOAT64);
        j += 2;
      } else {
        t = em_tensor_scalar(em_scalar_float(v[g][j++]), EM_FLOAT64);
      }
      em_status st = t ? em_state_dict_set(sd, name, t) : em_last_status();
      em_tensor_release(t);
      if (st) {
        emp_raise();
        goto done;
      }
    }
  }
  if (em_optim_load_state_dict(self->opt, sd)) {
    emp_raise();
    goto done;
  }
  for (int g = 0; g < self->ng; g++) memcpy(self->cache[g], v[g], sizeof v[g]);
  ret = Py_NewRef(Py_None);
done:
  PyMem_Free(v);
  PyMem_Free(gs);
  em_state_dict_free(sd);
  return ret;
}

static PyMethodDef opt_methods[] = {
    {"step", opt_step, METH_O, "step(param_groups): sync hyper-parameters, update"},
    {"sync", opt_sync, METH_O, "sync(param_groups)"},
    {"zero_grad", opt_zero_grad, METH_O, "zero_grad(set_to_none)"},
    {"add_param_group", opt_add_param_group, METH_O, NULL},
    {"state_dict", opt_state_dict, METH_NOARGS, NULL},
    {"load_state_dict", EMP_FN(opt_load_state_dict), METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Opt_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember._C._Optimizer",
    .tp_basicsize = sizeof(OptObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = opt_new,
    .tp_dealloc = opt_dealloc,
    .tp_methods = opt_methods,
    .tp_doc = "The C optimizer behind ember.optim (internal).",
};

int emp_init_optim(PyObject *module) {
  for (int k = 0; k < 5; k++)
    for (int i = 0; KEYS[k][i]; i++)
      if (!(key_objs[k][i] = PyUnicode_InternFromString(KEYS[k][i]))) return -1;
  if (!(str_params = PyUnicode_InternFromString("params"))) return -1;
  if (PyType_Ready(&Opt_Type) < 0) return -1;
  return PyModule_AddObjectRef(module, "_Optimizer", (PyObject *)&Opt_Type);
}
