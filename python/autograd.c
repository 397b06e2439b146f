/* Autograd from Python: requires_grad / grad / grad_fn / is_leaf,
 * backward and autograd.grad, tensor hooks (Python callables), custom
 * Functions written in Python (ember.autograd.Function), grad mode.
 *
 * Locking: the engine runs one backward at a time under its own lock and
 * calls hooks / Function.backward with that lock held. A callback takes the
 * GIL; so every call into the engine (backward, grad, hook registration
 * and removal) releases the GIL first — otherwise a thread holding the GIL
 * and waiting for the engine lock would deadlock with a callback waiting
 * for the GIL. A backward started from inside a callback on the same
 * thread is refused (the engine lock is not reentrant).
 *
 * Python exceptions raised by hooks and Functions are parked
 * (errors.c) and re-raised unchanged when the engine returns. */
#include "autograd/autograd_impl.h"
#include "python/ember_py.h"

static _Thread_local int engine_depth; /* > 0 while this thread is inside the engine */

/* Brackets a backward or grad call into the engine (run with the GIL
 * released in between): enter refuses one from inside a callback. */
static int engine_enter(const char *what) {
  if (engine_depth > 0) {
    PyErr_Format(PyExc_RuntimeError,
                 "%s: cannot run backward from inside a backward hook or Function.backward "
                 "(ember's engine is not reentrant)",
                 what);
    return -1;
  }
  engine_depth++;
  em_clear_interrupt();
  return 0;
}
static int engine_leave(em_status st) {
  engine_depth--;
  return st ? emp_raise_status(st) : 0;
}

/* ---- tensor attributes ---------------------------------------------------------------------- */

static PyObject *get_requires_grad(PyObject *self, void *c) {
  return PyBool_FromLong(emp_tensor(self)->requires_grad);
}
static int set_requires_grad(PyObject *self, PyObject *v, void *c) {
  bool b;
  if (!v || !PyBool_Check(v)) {
    PyErr_SetString(PyExc_TypeError, "requires_grad must be a bool");
    return -1;
  }
  b = v == Py_True;
  em_status st = em_tensor_set_requires_grad(emp_tensor(self), b);
  return st ? emp_raise_status(st) : 0;
}

static PyObject *get_grad(PyObject *self, void *c) {
  em_tensor *g = em_tensor_grad(emp_tensor(self));
  if (!g) Py_RETURN_NONE;
  return emp_wrap(g);
}
static int set_grad(PyObject *self, PyObject *v, void *c) {
  em_tensor *g = NULL;
  if (v && v != Py_None) {
    if (!emp_is_tensor(v)) {
      PyErr_Format(PyExc_TypeError, "assigned grad expected to be a Tensor or None but got grad of "
                   "type %s", Py_TYPE(v)->tp_name);
      return -1;
    }
    g = emp_tensor(v);
  }
  em_status st = em_tensor_set_grad(emp_tensor(self), g);
  return st ? emp_raise_status(st) : 0;
}

PyObject *emp_node_obj(em_ag_node *n);

static PyObject *get_grad_fn(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  if (!t->requires_grad || !t->ag || !t->ag->grad_fn) Py_RETURN_NONE;
  return emp_node_obj(t->ag->grad_fn);
}
static PyObject *get_is_leaf(PyObject *self, void *c) {
  return PyBool_FromLong(em_tensor_is_leaf(emp_tensor(self)));
}
static PyObject *get_retains_grad(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  return PyBool_FromLong(t->ag && t->ag->retains_grad && !em_tensor_is_leaf(t));
}
static PyObject *get_version(PyObject *self, void *c) {
  return PyLong_FromUnsignedLongLong(em_tensor_version(emp_tensor(self)));
}
static PyObject *get_output_nr(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  return PyLong_FromLong(t->ag ? t->ag->output_nr : 0);
}
static PyObject *get_is_view(PyObject *self, void *c) {
  return PyBool_FromLong(emp_tensor(self)->base != NULL);
}

PyGetSetDef emp_autograd_getset[] = {
    {"requires_grad", get_requires_grad, set_requires_grad, NULL, NULL},
    {"grad", get_grad, set_grad, "The gradient accumulated by backward (or None).", NULL},
    {"grad_fn", get_grad_fn, NULL, "The node that created this tensor (or None).", NULL},
    {"is_leaf", get_is_leaf, NULL, NULL, NULL},
    {"retains_grad", get_retains_grad, NULL, NULL, NULL},
    {"_version", get_version, NULL, NULL, NULL},
    {"output_nr", get_output_nr, NULL, NULL, NULL},
    {"_is_view_", get_is_view, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- tensor methods ----------------------------------------------------------------------------- */

static PyObject *m_requires_grad_(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kw) {
  static const char *const names[] = {"requires_grad", NULL};
  PyObject *a[1];
  if (emp_parse("requires_grad_", names, 0, args, nargs, kw, a) < 0) return NULL;
  bool b = true;
  if (a[0] && emp_arg_bool(a[0], "requires_grad_", "requires_grad", &b) < 0) return NULL;
  em_status st = em_tensor_set_requires_grad(emp_tensor(self), b);
  return st ? emp_raise() : Py_NewRef(self);
}

static PyObject *m_retain_grad(PyObject *self, PyObject *unused) {
  if (em_tensor_retain_grad(emp_tensor(self))) return emp_raise();
  Py_RETURN_NONE;
}

static PyObject *m_detach_(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  if (t->ag && t->ag->grad_fn) {
    if (t->base) {
      PyErr_SetString(PyExc_RuntimeError,
                      "Can't detach views in-place. Use detach() instead.");
      return NULL;
    }
    em_ag_node *n = t->ag->grad_fn;
    t->ag->grad_fn = NULL;
    t->ag->output_nr = 0;
    t->requires_grad = false;
    em__ag_node_release(n);
  } else if (t->requires_grad) {
    em_tensor_set_requires_grad(t, false);
  }
  return Py_NewRef(self);
}

/* Runs backward from roots with the GIL released. */
static int run_backward(int n, em_tensor *const *roots, em_tensor *const *grads, bool retain) {
  if (engine_enter("backward") < 0) return -1;
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_backward_multi(n, roots, grads, retain);
  Py_END_ALLOW_THREADS
  return engine_leave(st);
}

static int run_grad(int nout, em_tensor *const *outs, em_tensor *const *gouts, int nin,
                    em_tensor *const *ins, bool retain, bool allow_unused, em_tensor **res) {
  if (engine_enter("grad") < 0) return -1;
  em_status st;
  Py_BEGIN_ALLOW_THREADS st = em_ag_grad(nout, outs, gouts, nin, ins, retain, allow_unused, res);
  Py_END_ALLOW_THREADS
  return engine_leave(st);
}

/* Accumulates grads[i] into inputs[i].grad (backward(inputs=...)). */
static int accumulate_into(int n, em_tensor *const *inputs, em_tensor **grads) {
  for (int i = 0; i < n; i++) {
    if (!grads[i]) continue;
    em_tensor *old = em_tensor_grad(inputs[i]);
    em_status st;
    if (old) {
      em_tensor *sum = em_tensor_add(old, grads[i]);
      em_tensor_release(old);
      if (!sum) return emp_raise_status(em_last_status());
      st = em_tensor_set_grad(inputs[i], sum);
      em_tensor_release(sum);
    } else {
      em_tensor *c = em_tensor_clone(grads[i]);
      if (!c) return emp_raise_status(em_last_status());
      st = em_tensor_set_grad(inputs[i], c);
      em_tensor_release(c);
    }
    if (st) return emp_raise_status(st);
  }
  return 0;
}

/* A tensor or a sequence of tensors -> borrowed array in ts (max cap).
 * Entries may be NULL when allow_none and the item is None. */
static int tensor_list(PyObject *o, const char *fname, const char *arg, em_tensor **ts, int cap,
                       bool allow_none, int *n) {
  if (emp_is_tensor(o)) {
    ts[0] = emp_tensor(o);
    *n = 1;
    return 0;
  }
  if (!PyTuple_Check(o) && !PyList_Check(o)) {
    PyErr_Format(PyExc_TypeError, "%s(): argument '%s' must be a Tensor or a sequence of Tensors, "
                 "not %s", fname, arg, Py_TYPE(o)->tp_name);
    return -1;
  }
  Py_ssize_t len = PySequence_Fast_GET_SIZE(o);
  if (len > cap) {
    PyErr_Format(PyExc_ValueError, "%s(): at most %d tensors in '%s'", fname, cap, arg);
    return -1;
  }
  for (Py_ssize_t i = 0; i < len; i++) {
    PyObject *x = PySequence_Fast_GET_ITEM(o, i);
    if (x == Py_None && allow_none) {
      ts[i] = NULL;
    } else if (emp_is_tensor(x)) {
      ts[i] = emp_tensor(x);
    } else {
      PyErr_Format(PyExc_TypeError, "%s(): '%s' must contain Tensors, found %s at position %zd",
                   fname, arg, Py_TYPE(x)->tp_name, i);
      return -1;
    }
  }
  *n = (int)len;
  return 0;
}

/* An optional bool argument: absent or None leaves *out as it is. */
static int opt_bool(PyObject *o, const char *fn, const char *arg, bool *out) {
  return o && o != Py_None ? emp_arg_bool(o, fn, arg, out) : 0;
}

static PyObject *no_create_graph(const char *fn) {
  PyErr_Format(PyExc_NotImplementedError,
               "%s: create_graph=True (higher-order gradients) is not supported by ember", fn);
  return NULL;
}

#define MAX_ROOTS 1024

/* _backward(tensors, grad_tensors=None, retain_graph=False, inputs=None) */
static PyObject *backward_impl(PyObject *tensors, PyObject *grads, PyObject *retain,
                               PyObject *create, PyObject *inputs) {
  bool retain_graph = false, create_graph = false;
  if (opt_bool(create, "backward", "create_graph", &create_graph) < 0) return NULL;
  if (create_graph) return no_create_graph("backward");
  if (opt_bool(retain, "backward", "retain_graph", &retain_graph) < 0) return NULL;
  static em_tensor *roots_buf[MAX_ROOTS];
  em_tensor **roots = PyMem_Calloc(MAX_ROOTS, sizeof *roots), **gs = PyMem_Calloc(MAX_ROOTS, sizeof *gs);
  (void)roots_buf;
  PyObject *res = NULL;
  int n = 0, ng = 0;
  if (!roots || !gs) {
    PyErr_NoMemory();
    goto done;
  }
  if (tensor_list(tensors, "backward", "tensors", roots, MAX_ROOTS, false, &n) < 0) goto done;
  if (grads && grads != Py_None) {
    if (tensor_list(grads, "backward", "grad_tensors", gs, MAX_ROOTS, true, &ng) < 0) goto done;
    if (ng != n) {
      PyErr_Format(PyExc_RuntimeError, "backward: got %d tensors and %d gradients", n, ng);
      goto done;
    }
  }
  if (inputs && inputs != Py_None) {
    em_tensor *ins[MAX_ROOTS / 4];
    int nin = 0;
    if (tensor_list(inputs, "backward", "inputs", ins, MAX_ROOTS / 4, false, &nin) < 0) goto done;
    if (nin == 0) {
      PyErr_SetString(PyExc_RuntimeError, "backward: 'inputs' argument to backward() cannot be empty");
      goto done;
    }
    em_tensor *out[MAX_ROOTS / 4] = {0};
    if (run_grad(n, roots, ng ? gs : NULL, nin, ins, retain_graph, true, out) < 0) goto done;
    bool prev = em_set_grad_enabled(false);
    int rc = accumulate_into(nin, ins, out);
    em_set_grad_enabled(prev);
    for (int i = 0; i < nin; i++) em_tensor_release(out[i]);
    if (rc < 0) goto done;
  } else if (run_backward(n, roots, ng ? gs : NULL, retain_graph) < 0) {
    goto done;
  }
  res = Py_NewRef(Py_None);
done:
  PyMem_Free(roots);
  PyMem_Free(gs);
  return res;
}

static PyObject *m_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"gradient", "retain_graph", "create_graph", "inputs", NULL};
  PyObject *a[4];
  if (emp_parse("backward", names, 0, args, nargs, kw, a) < 0) return NULL;
  return backward_impl(self, a[0], a[1], a[2], a[3]);
}

static PyObject *f_backward(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"tensors", "grad_tensors", "retain_graph", "create_graph",
                                      "grad_variables", "inputs", NULL};
  PyObject *a[6];
  if (emp_parse("backward", names, 1, args, nargs, kw, a) < 0) return NULL;
  return backward_impl(a[0], a[1] ? a[1] : a[4], a[2], a[3], a[5]);
}

/* _grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
 *       allow_unused=False) -> tuple */
static PyObject *f_grad(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"outputs", "inputs", "grad_outputs", "retain_graph",
                                      "create_graph", "only_inputs", "allow_unused", NULL};
  PyObject *a[7];
  if (emp_parse("grad", names, 2, args, nargs, kw, a) < 0) return NULL;
  bool retain = false, create = false, allow_unused = false;
  if (opt_bool(a[4], "grad", "create_graph", &create) < 0 ||
      opt_bool(a[6], "grad", "allow_unused", &allow_unused) < 0)
    return NULL;
  if (create) return no_create_graph("grad");
  retain = create;
  if (opt_bool(a[3], "grad", "retain_graph", &retain) < 0) return NULL;
  em_tensor **outs = PyMem_Calloc(MAX_ROOTS, sizeof *outs), **gouts = PyMem_Calloc(MAX_ROOTS, sizeof *gouts),
            **ins = PyMem_Calloc(MAX_ROOTS, sizeof *ins), **res = PyMem_Calloc(MAX_ROOTS, sizeof *res);
  PyObject *tup = NULL;
  int nout = 0, ng = 0, nin = 0;
  if (!outs || !gouts || !ins || !res) {
    PyErr_NoMemory();
    goto done;
  }
  if (tensor_list(a[0], "grad", "outputs", outs, MAX_ROOTS, false, &nout) < 0 ||
      tensor_list(a[1], "grad", "inputs", ins, MAX_ROOTS, false, &nin) < 0)
    goto done;
  if (a[2] && a[2] != Py_None) {
    if (tensor_list(a[2], "grad", "grad_outputs", gouts, MAX_ROOTS, true, &ng) < 0) goto done;
    if (ng != nout) {
      PyErr_Format(PyExc_RuntimeError, "grad: grad_outputs has %d entries but outputs has %d", ng, nout);
      goto done;
    }
  }
  if (run_grad(nout, outs, ng ? gouts : NULL, nin, ins, retain, allow_unused, res) < 0) goto done;
  tup = PyTuple_New(nin);
  for (int i = 0; i < nin; i++) {
    PyObject *v = res[i] ? emp_wrap(res[i]) : Py_NewRef(Py_None);
    res[i] = NULL;
    if (!v || !tup) {
      Py_XDECREF(v);
      Py_CLEAR(tup);
      continue;
    }
    PyTuple_SET_ITEM(tup, i, v);
  }
done:
  if (res)
    for (int i = 0; i < nin; i++) em_tensor_release(res[i]);
  PyMem_Free(outs);
  PyMem_Free(gouts);
  PyMem_Free(ins);
  PyMem_Free(res);
  return tup;
}

/* ---- hooks --------------------------------------------------------------------------------------- */

static void pyobj_free(void *ctx) {
  PyGILState_STATE g;
  if (emp_gil_enter(&g)) {
    Py_DECREF((PyObject *)ctx);
    emp_gil_leave(g);
  }
}

/* Calls the Python hook ctx with t. A gradient hook (replacement non-NULL)
 * may return a Tensor to use instead of t; a post-accumulate hook's result
 * is ignored. */
static em_status tensor_hook(em_tensor *t, em_tensor **replacement, void *ctx) {
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return em_set_error(EM_ERR_STATE, "hook: the interpreter is finalizing");
  em_status st = EM_OK;
  PyObject *to = emp_wrap_borrowed(t);
  PyObject *r = to ? PyObject_CallOneArg((PyObject *)ctx, to) : NULL;
  Py_XDECREF(to);
  if (!r) {
    st = emp_park_exception();
  } else if (replacement && r != Py_None) {
    if (!emp_is_tensor(r)) {
      PyErr_Format(PyExc_TypeError, "hook must return None or a Tensor, got %s", Py_TYPE(r)->tp_name);
      st = emp_park_exception();
    } else {
      *replacement = em_tensor_retain(emp_tensor(r));
    }
  }
  Py_XDECREF(r);
  emp_gil_leave(g);
  return st;
}

static em_status post_acc_hook(em_tensor *leaf, void *ctx) { return tensor_hook(leaf, NULL, ctx); }

typedef struct EmHookHandle {
  PyObject_HEAD
  em_tensor *t; /* retained */
  int handle;
} EmHookHandle;

static void handle_dealloc(PyObject *self) {
  EmHookHandle *h = (EmHookHandle *)self;
  em_tensor_release(h->t);
  Py_TYPE(self)->tp_free(self);
}

static PyObject *handle_remove(PyObject *self, PyObject *unused) {
  EmHookHandle *h = (EmHookHandle *)self;
  if (h->t && h->handle > 0) {
    em_tensor *t = h->t;
    int id = h->handle;
    Py_BEGIN_ALLOW_THREADS em_tensor_remove_hook(t, id);
    Py_END_ALLOW_THREADS
    h->handle = 0;
  }
  Py_RETURN_NONE;
}
static PyObject *handle_enter(PyObject *self, PyObject *unused) { return Py_NewRef(self); }
static PyObject *handle_exit(PyObject *self, PyObject *args) { return handle_remove(self, NULL); }
static PyObject *handle_id(PyObject *self, void *c) {
  return PyLong_FromLong(((EmHookHandle *)self)->handle);
}

static PyMethodDef handle_methods[] = {
    {"remove", handle_remove, METH_NOARGS, "Removes the hook."},
    {"__enter__", handle_enter, METH_NOARGS, NULL},
    {"__exit__", handle_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef handle_getset[] = {{"id", handle_id, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject EmHookHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.utils.hooks.RemovableHandle",
    .tp_basicsize = sizeof(EmHookHandle),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = handle_dealloc,
    .tp_methods = handle_methods,
    .tp_getset = handle_getset,
};

static PyObject *register_any(PyObject *self, PyObject *fn, bool post) {
  if (!PyCallable_Check(fn)) {
    PyErr_Format(PyExc_TypeError, "hook must be callable, got %s", Py_TYPE(fn)->tp_name);
    return NULL;
  }
  em_tensor *t = emp_tensor(self);
  if (!t->requires_grad) {
    PyErr_SetString(PyExc_RuntimeError,
                    "cannot register a hook on a tensor that doesn't require gradient");
    return NULL;
  }
  EmHookHandle *h = PyObject_New(EmHookHandle, &EmHookHandle_Type);
  if (!h) return NULL;
  h->t = NULL;
  h->handle = 0;
  Py_INCREF(fn);
  int id;
  Py_BEGIN_ALLOW_THREADS
  id = post ? em_tensor_register_post_accumulate_grad_hook(t, post_acc_hook, fn, pyobj_free)
            : em_tensor_register_hook(t, tensor_hook, fn, pyobj_free);
  Py_END_ALLOW_THREADS
  if (id < 0) {
    Py_DECREF(fn);
    Py_DECREF(h);
    return emp_raise();
  }
  h->t = em_tensor_retain(t);
  h->handle = id;
  return (PyObject *)h;
}
static PyObject *m_register_hook(PyObject *self, PyObject *fn) { return register_any(self, fn, false); }
static PyObject *m_register_post_acc(PyObject *self, PyObject *fn) {
  return register_any(self, fn, true);
}

PyMethodDef emp_autograd_methods[] = {
    {"requires_grad_", EMP_FN(m_requires_grad_), EMP_KW, NULL},
    {"retain_grad", m_retain_grad, METH_NOARGS, NULL},
    {"detach_", m_detach_, METH_NOARGS, NULL},
    {"backward", EMP_FN(m_backward), EMP_KW,
     "backward(gradient=None, retain_graph=None, create_graph=False, inputs=None)"},
    {"register_hook", m_register_hook, METH_O, "Calls hook(grad) when a gradient flows in."},
    {"register_post_accumulate_grad_hook", m_register_post_acc, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- graph nodes ---------------------------------------------------------------------------------- */

typedef struct EmNode {
  PyObject_HEAD
  em_ag_node *n; /* retained */
} EmNode;

static PyTypeObject EmNode_Type;
static PyObject *node_types; /* name -> subclass */

PyObject *emp_node_obj(em_ag_node *n) {
  PyObject *tp = PyDict_GetItemString(node_types, n->name);
  if (!tp) {
    tp = PyObject_CallFunction((PyObject *)&PyType_Type, "s(O){s:s}", n->name, (PyObject *)&EmNode_Type,
                               "__module__", "ember.autograd");
    if (!tp) return NULL;
    int rc = PyDict_SetItemString(node_types, n->name, tp);
    Py_DECREF(tp);
    if (rc < 0) return NULL;
  }
  EmNode *o = (EmNode *)((PyTypeObject *)tp)->tp_alloc((PyTypeObject *)tp, 0);
  if (!o) return NULL;
  atomic_fetch_add(&n->refcount, 1);
  o->n = n;
  return (PyObject *)o;
}

static void node_dealloc(PyObject *self) {
  EmNode *o = (EmNode *)self;
  PyTypeObject *tp = Py_TYPE(self);
  em_ag_node *n = o->n;
  o->n = NULL;
  if (n) em__ag_node_release(n);
  /* the per-name subclasses are Python heap types: their subtype_dealloc
   * drops the type reference (EmNode_Type itself is static) */
  tp->tp_free(self);
}

static PyObject *node_name(PyObject *self, PyObject *unused) {
  return PyUnicode_FromString(((EmNode *)self)->n->name);
}

static PyObject *node_next_functions(PyObject *self, void *c) {
  em_ag_node *n = ((EmNode *)self)->n;
  PyObject *t = PyTuple_New(n->nin);
  for (int i = 0; t && i < n->nin; i++) {
    PyObject *fn = n->next[i].node ? emp_node_obj(n->next[i].node) : Py_NewRef(Py_None);
    PyObject *pair = fn ? Py_BuildValue("(Ni)", fn, n->next[i].input_nr) : NULL;
    if (!pair) {
      Py_CLEAR(t);
      break;
    }
    PyTuple_SET_ITEM(t, i, pair);
  }
  return t;
}

static PyObject *node_variable(PyObject *self, void *c) {
  em_ag_node *n = ((EmNode *)self)->n;
  if (n->type != EM_AG_NODE_ACCUMULATE || !n->variable) {
    PyErr_SetString(PyExc_AttributeError, "'variable' exists only on AccumulateGrad nodes");
    return NULL;
  }
  return emp_wrap_borrowed(n->variable);
}

static PyObject *node_repr(PyObject *self) {
  return PyUnicode_FromFormat("<%s object at %p>", ((EmNode *)self)->n->name, self);
}

static PyObject *node_richcompare(PyObject *a, PyObject *b, int op) {
  if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &EmNode_Type)) Py_RETURN_NOTIMPLEMENTED;
  bool eq = ((EmNode *)a)->n == ((EmNode *)b)->n;
  return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}
static Py_hash_t node_hash(PyObject *self) { return _Py_HashPointer(((EmNode *)self)->n); }

static PyMethodDef node_methods[] = {
    {"name", node_name, METH_NOARGS, "The node's name, e.g. 'AddBackward0'."},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef node_getset[] = {
    {"next_functions", node_next_functions, NULL, NULL, NULL},
    {"variable", node_variable, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EmNode_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.autograd.Node",
    .tp_basicsize = sizeof(EmNode),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_dealloc = node_dealloc,
    .tp_repr = node_repr,
    .tp_richcompare = node_richcompare,
    .tp_hash = node_hash,
    .tp_methods = node_methods,
    .tp_getset = node_getset,
};

/* ---- custom Functions ------------------------------------------------------------------------------ */

typedef struct EmFunctionCtx {
  PyObject_HEAD
  PyObject *dict;
  em_ag_ctx *ag;           /* valid while the node lives (NULL after) */
  PyObject *needs_input_grad;
  PyObject *non_diff;      /* list of tensors marked non-differentiable */
  bool materialize;
  bool saved_called;
} EmFunctionCtx;

static PyTypeObject EmFunctionCtx_Type;

/* forward's return value, handed from fn_forward to the apply() that
 * called it on this thread (f itself may be gone by then) */
static _Thread_local PyObject *fn_result;

typedef struct py_fn {
  em_ag_function fn;
  char name[96];
  PyObject *cls;
  PyObject *args;   /* forward arguments (during forward only) */
  EmFunctionCtx *ctx;
  int nargs;
  int nin;
  int *tensor_pos;  /* [nin]: argument position of each tensor input */
  int nout;
  em_ag_tmeta out_meta[EM_AG_MAX_OUTPUTS];
} py_fn;

static void py_fn_free(void *p) {
  py_fn *f = p;
  PyGILState_STATE g;
  if (emp_gil_enter(&g)) {
    if (f->ctx) f->ctx->ag = NULL;
    Py_XDECREF(f->ctx);
    Py_XDECREF(f->cls);
    Py_XDECREF(f->args);
    PyMem_RawFree(f->tensor_pos);
    emp_gil_leave(g);
  }
  PyMem_RawFree(f);
}

static em_status fn_forward(em_ag_ctx *ag, int nin, em_tensor *const *in, int *nout, em_tensor **out) {
  py_fn *f = em_ag_ctx_user(ag);
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return em_set_error(EM_ERR_STATE, "Function: the interpreter is finalizing");
  em_status st = EM_OK;
  f->ctx->ag = ag;
  PyObject *fwd = PyObject_GetAttrString(f->cls, "forward");
  PyObject *call_args = NULL, *r = NULL;
  if (fwd) {
    Py_ssize_t n = PyTuple_GET_SIZE(f->args);
    call_args = PyTuple_New(n + 1);
    if (call_args) {
      PyTuple_SET_ITEM(call_args, 0, Py_NewRef((PyObject *)f->ctx));
      for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(call_args, i + 1, Py_NewRef(PyTuple_GET_ITEM(f->args, i)));
      r = PyObject_Call(fwd, call_args, NULL);
    }
  }
  Py_XDECREF(fwd);
  Py_XDECREF(call_args);
  if (!r) {
    st = emp_park_exception();
    goto out;
  }
  /* collect the tensor outputs */
  int k = 0;
  if (emp_is_tensor(r)) {
    out[k++] = em_tensor_retain(emp_tensor(r));
  } else if (PyTuple_Check(r) || PyList_Check(r)) {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(r); i++) {
      PyObject *o = PySequence_Fast_GET_ITEM(r, i);
      if (!emp_is_tensor(o)) continue;
      if (k == EM_AG_MAX_OUTPUTS) {
        for (int j = 0; j < k; j++) em_tensor_release(out[j]);
        PyErr_Format(PyExc_RuntimeError, "%s: forward returned more than %d tensors", f->name,
                     EM_AG_MAX_OUTPUTS);
        st = emp_park_exception();
        Py_DECREF(r);
        goto out;
      }
      out[k++] = em_tensor_retain(emp_tensor(o));
    }
  } else if (r != Py_None) {
    Py_DECREF(r);
    PyErr_Format(PyExc_TypeError, "%s.forward must return a Tensor or a tuple of Tensors", f->name + 0);
    st = emp_park_exception();
    goto out;
  }
  /* non-differentiable outputs */
  if (f->ctx->non_diff) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(f->ctx->non_diff); i++) {
      em_tensor *m = emp_tensor(PyList_GET_ITEM(f->ctx->non_diff, i));
      for (int j = 0; j < k; j++)
        if (out[j] == m) em_ag_ctx_mark_non_differentiable(ag, j);
    }
  }
  for (int j = 0; j < k; j++) {
    em_ag_tmeta *m = &f->out_meta[j];
    m->ndim = out[j]->ndim;
    m->dtype = out[j]->dtype;
    m->device = out[j]->device;
    memcpy(m->shape, out[j]->shape, sizeof(int64_t) * (size_t)out[j]->ndim);
  }
  f->nout = k;
  *nout = k;
  Py_XSETREF(fn_result, r); /* apply() rebuilds the output structure from it */
out:
  Py_CLEAR(f->args);
  emp_gil_leave(g);
  return st;
}

static em_status fn_backward(em_ag_ctx *ag, int nout, em_tensor *const *grad_out, int nin,
                             em_tensor **grad_in) {
  py_fn *f = em_ag_ctx_user(ag);
  PyGILState_STATE g;
  if (!emp_gil_enter(&g)) return em_set_error(EM_ERR_STATE, "Function: the interpreter is finalizing");
  em_status st = EM_OK;
  PyObject *bwd = NULL, *call_args = NULL, *r = NULL, *seq = NULL;
  f->ctx->ag = ag;
  bwd = PyObject_GetAttrString(f->cls, "backward");
  if (!bwd) goto pyerr;
  call_args = PyTuple_New(nout + 1);
  if (!call_args) goto pyerr;
  PyTuple_SET_ITEM(call_args, 0, Py_NewRef((PyObject *)f->ctx));
  for (int j = 0; j < nout; j++) {
    PyObject *go;
    if (grad_out[j]) {
      go = emp_wrap_borrowed(grad_out[j]);
    } else if (f->ctx->materialize && j < f->nout) {
      em_ag_tmeta *m = &f->out_meta[j];
      go = emp_wrap(em_tensor_zeros(m->ndim, m->shape, (em_dtype)m->dtype));
    } else {
      go = Py_NewRef(Py_None);
    }
    if (!go) goto pyerr;
    PyTuple_SET_ITEM(call_args, j + 1, go);
  }
  r = PyObject_Call(bwd, call_args, NULL);
  if (!r) goto pyerr;
  if (PyTuple_Check(r) || PyList_Check(r)) {
    seq = Py_NewRef(r);
  } else {
    seq = PyTuple_Pack(1, r);
    if (!seq) goto pyerr;
  }
  Py_ssize_t ng = PySequence_Fast_GET_SIZE(seq);
  if (ng < f->nargs) {
    PyErr_Format(PyExc_RuntimeError,
                 "function %s returned an incorrect number of gradients (expected %d, got %zd)",
                 f->name, f->nargs, ng);
    goto pyerr;
  }
  for (Py_ssize_t p = 0; p < ng; p++) {
    PyObject *gi = PySequence_Fast_GET_ITEM(seq, p);
    int slot = -1;
    for (int i = 0; i < f->nin; i++)
      if (f->tensor_pos[i] == p) slot = i;
    if (gi == Py_None) continue;
    if (slot < 0) {
      PyErr_Format(PyExc_RuntimeError,
                   "function %s returned a gradient different than None at position %zd, but the "
                   "corresponding forward input was not a Variable",
                   f->name, p + 1);
      goto pyerr;
    }
    if (!emp_is_tensor(gi)) {
      PyErr_Format(PyExc_TypeError, "function %s returned a %s as gradient %zd (expected a Tensor "
                   "or None)", f->name, Py_TYPE(gi)->tp_name, p + 1);
      goto pyerr;
    }
    if (slot < nin) grad_in[slot] = em_tensor_retain(emp_tensor(gi));
  }
  goto out;
pyerr:
  for (int i = 0; i < nin; i++) {
    em_tensor_release(grad_in[i]);
    grad_in[i] = NULL;
  }
  st = emp_park_exception();
out:
  Py_XDECREF(bwd);
  Py_XDECREF(call_args);
  Py_XDECREF(r);
  Py_XDECREF(seq);
  emp_gil_leave(g);
  return st;
}

/* _function_apply(cls, args) */
static PyObject *f_function_apply(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "_function_apply(cls, args_tuple)");
    return NULL;
  }
  PyObject *cls = args[0], *fargs = args[1];
  Py_ssize_t na = PyTuple_GET_SIZE(fargs);
  py_fn *f = PyMem_RawCalloc(1, sizeof *f);
  if (!f) return PyErr_NoMemory();
  f->tensor_pos = PyMem_RawCalloc((size_t)na + 1, sizeof *f->tensor_pos);
  EmFunctionCtx *ctx = PyObject_GC_New(EmFunctionCtx, &EmFunctionCtx_Type);
  if (ctx) {
    ctx->dict = NULL;
    ctx->ag = NULL;
    ctx->non_diff = NULL;
    ctx->materialize = true;
    ctx->saved_called = false;
    ctx->needs_input_grad = PyTuple_New(na);
    PyObject_GC_Track(ctx);
  }
  if (!f->tensor_pos || !ctx) {
    if (!PyErr_Occurred()) PyErr_NoMemory();
    goto fail;
  }
  em_tensor *in[256];
  if (na > 256) {
    PyErr_SetString(PyExc_ValueError, "Function.apply: at most 256 arguments");
    goto fail;
  }
  bool grad_on = em_is_grad_enabled();
  int nin = 0;
  for (Py_ssize_t i = 0; i < na; i++) {
    PyObject *o = PyTuple_GET_ITEM(fargs, i);
    bool needs = false;
    if (emp_is_tensor(o)) {
      in[nin] = emp_tensor(o);
      f->tensor_pos[nin++] = (int)i;
      needs = grad_on && emp_tensor(o)->requires_grad;
    }
    if (ctx->needs_input_grad) PyTuple_SET_ITEM(ctx->needs_input_grad, i, PyBool_FromLong(needs));
  }
  if (!ctx->needs_input_grad) goto fail;
  PyObject *qn = PyObject_GetAttrString(cls, "__name__");
  const char *cname = qn && PyUnicode_Check(qn) ? PyUnicode_AsUTF8(qn) : NULL;
  snprintf(f->name, sizeof f->name, "%sBackward", cname ? cname : "Function");
  Py_XDECREF(qn);
  PyErr_Clear();
  f->fn.name = f->name;
  f->fn.forward = fn_forward;
  f->fn.backward = fn_backward;
  f->cls = Py_NewRef(cls);
  f->args = Py_NewRef(fargs);
  f->ctx = ctx; /* f owns the ctx reference */
  f->nargs = (int)na;
  f->nin = nin;
  Py_INCREF(ctx); /* ours, for rebuilding below */
  em_tensor *out[EM_AG_MAX_OUTPUTS] = {0};
  int nout = 0;
  Py_CLEAR(fn_result);
  em_status st = em_ag_function_apply(&f->fn, f, py_fn_free, nin, in, &nout, out);
  Py_DECREF(ctx);
  PyObject *r = fn_result; /* owned */
  fn_result = NULL;
  if (st) {
    Py_XDECREF(r);
    return emp_raise();
  }
  if (nout == 0) {
    if (r) return r;
    Py_RETURN_NONE;
  }
  if (r && emp_is_tensor(r)) {
    Py_DECREF(r);
    for (int j = 1; j < nout; j++) em_tensor_release(out[j]);
    return emp_wrap(out[0]);
  }
  if (r && (PyTuple_Check(r) || PyList_Check(r))) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(r);
    PyObject *tup = PyTuple_New(n);
    int k = 0;
    for (Py_ssize_t i = 0; tup && i < n; i++) {
      PyObject *o = PySequence_Fast_GET_ITEM(r, i);
      PyObject *v = emp_is_tensor(o) && k < nout ? emp_wrap(out[k++]) : Py_NewRef(o);
      if (!v) {
        Py_CLEAR(tup);
        break;
      }
      PyTuple_SET_ITEM(tup, i, v);
    }
    for (; k < nout; k++) em_tensor_release(out[k]);
    Py_DECREF(r);
    return tup;
  }
  Py_XDECREF(r);
  for (int j = 0; j < nout; j++) em_tensor_release(out[j]);
  PyErr_SetString(PyExc_RuntimeError, "Function.apply: lost the forward result");
  return NULL;
fail: /* before f is handed to the engine */
  Py_XDECREF(ctx);
  PyMem_RawFree(f->tensor_pos);
  PyMem_RawFree(f);
  return NULL;
}

/* ---- the ctx object ----------------------------------------------------------------------------------- */

static int ctx_traverse(PyObject *self, visitproc visit, void *arg) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  Py_VISIT(c->dict);
  Py_VISIT(c->needs_input_grad);
  Py_VISIT(c->non_diff);
  return 0;
}
static int ctx_clear(PyObject *self) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  Py_CLEAR(c->dict);
  Py_CLEAR(c->needs_input_grad);
  Py_CLEAR(c->non_diff);
  return 0;
}
static void ctx_dealloc(PyObject *self) {
  PyObject_GC_UnTrack(self);
  ctx_clear(self);
  Py_TYPE(self)->tp_free(self);
}

static int ctx_live(EmFunctionCtx *c, const char *what) {
  if (c->ag) return 0;
  PyErr_Format(PyExc_RuntimeError, "%s: the Function's graph has been freed (call it inside "
               "forward/backward)", what);
  return -1;
}

static PyObject *ctx_save_for_backward(PyObject *self, PyObject *args) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  if (ctx_live(c, "save_for_backward") < 0) return NULL;
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  em_tensor *ts[256];
  if (n > 256) {
    PyErr_SetString(PyExc_ValueError, "save_for_backward: at most 256 tensors");
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *o = PyTuple_GET_ITEM(args, i);
    if (o == Py_None) {
      ts[i] = NULL;
    } else if (emp_is_tensor(o)) {
      ts[i] = emp_tensor(o);
    } else {
      PyErr_Format(PyExc_TypeError, "save_for_backward can only save variables, but argument %zd is "
                   "of type %s", i, Py_TYPE(o)->tp_name);
      return NULL;
    }
  }
  if (em_ag_ctx_save(c->ag, (int)n, ts)) return emp_raise();
  c->saved_called = true;
  Py_RETURN_NONE;
}

static PyObject *ctx_saved_tensors(PyObject *self, void *unused) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  if (ctx_live(c, "saved_tensors") < 0) return NULL;
  int n = em_ag_ctx_num_saved(c->ag);
  PyObject *t = PyTuple_New(n);
  for (int i = 0; t && i < n; i++) {
    em_clear_error();
    em_tensor *s = em_ag_ctx_saved(c->ag, i);
    PyObject *v;
    if (!s) {
      if (em_last_status() != EM_OK) {
        Py_DECREF(t);
        return emp_raise();
      }
      v = Py_NewRef(Py_None);
    } else {
      v = emp_wrap_borrowed(s);
    }
    if (!v) {
      Py_CLEAR(t);
      break;
    }
    PyTuple_SET_ITEM(t, i, v);
  }
  return t;
}

static PyObject *ctx_mark_non_differentiable(PyObject *self, PyObject *args) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  if (!c->non_diff && !(c->non_diff = PyList_New(0))) return NULL;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
    PyObject *o = PyTuple_GET_ITEM(args, i);
    if (!emp_is_tensor(o)) {
      PyErr_SetString(PyExc_TypeError, "mark_non_differentiable only accepts Tensors");
      return NULL;
    }
    if (PyList_Append(c->non_diff, o) < 0) return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *ctx_mark_dirty(PyObject *self, PyObject *args) { Py_RETURN_NONE; }

static PyObject *ctx_set_materialize_grads(PyObject *self, PyObject *v) {
  int b = PyObject_IsTrue(v);
  if (b < 0) return NULL;
  ((EmFunctionCtx *)self)->materialize = b;
  Py_RETURN_NONE;
}

static PyObject *ctx_needs_input_grad(PyObject *self, void *unused) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  return Py_NewRef(c->needs_input_grad ? c->needs_input_grad : Py_None);
}

static PyObject *ctx_get_dict(PyObject *self, void *unused) {
  EmFunctionCtx *c = (EmFunctionCtx *)self;
  if (!c->dict && !(c->dict = PyDict_New())) return NULL;
  return Py_NewRef(c->dict);
}

static PyMethodDef ctx_methods[] = {
    {"save_for_backward", ctx_save_for_backward, METH_VARARGS, NULL},
    {"mark_non_differentiable", ctx_mark_non_differentiable, METH_VARARGS, NULL},
    {"mark_dirty", ctx_mark_dirty, METH_VARARGS, NULL},
    {"set_materialize_grads", ctx_set_materialize_grads, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef ctx_getset[] = {
    {"saved_tensors", ctx_saved_tensors, NULL, NULL, NULL},
    {"saved_variables", ctx_saved_tensors, NULL, NULL, NULL},
    {"needs_input_grad", ctx_needs_input_grad, NULL, NULL, NULL},
    {"__dict__", ctx_get_dict, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EmFunctionCtx_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.autograd.function.FunctionCtx",
    .tp_basicsize = sizeof(EmFunctionCtx),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = ctx_dealloc,
    .tp_traverse = ctx_traverse,
    .tp_clear = ctx_clear,
    .tp_methods = ctx_methods,
    .tp_getset = ctx_getset,
    .tp_dictoffset = offsetof(EmFunctionCtx, dict),
};

/* ---- grad mode ---------------------------------------------------------------------------------------- */

static PyObject *f_is_grad_enabled(PyObject *m, PyObject *unused) {
  return PyBool_FromLong(em_is_grad_enabled());
}
static PyObject *f_set_grad_enabled(PyObject *m, PyObject *v) {
  int b = PyObject_IsTrue(v);
  if (b < 0) return NULL;
  return PyBool_FromLong(em_set_grad_enabled(b));
}

PyMethodDef emp_autograd_functions[] = {
    {"is_grad_enabled", f_is_grad_enabled, METH_NOARGS, NULL},
    {"_set_grad_enabled", f_set_grad_enabled, METH_O, "Sets grad mode; returns the previous mode."},
    {"_backward", EMP_FN(f_backward), EMP_KW, NULL},
    {"_grad", EMP_FN(f_grad), EMP_KW, NULL},
    {"_function_apply", EMP_FN(f_function_apply), METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

int emp_autograd_init(PyObject *m) {
  if (PyType_Ready(&EmNode_Type) < 0 || PyType_Ready(&EmHookHandle_Type) < 0 ||
      PyType_Ready(&EmFunctionCtx_Type) < 0)
    return -1;
  node_types = PyDict_New();
  if (!node_types) return -1;
  if (PyModule_AddObjectRef(m, "_Node", (PyObject *)&EmNode_Type) < 0 ||
      PyModule_AddObjectRef(m, "_FunctionCtx", (PyObject *)&EmFunctionCtx_Type) < 0 ||
      PyModule_AddObjectRef(m, "_RemovableHandle", (PyObject *)&EmHookHandle_Type) < 0)
    return -1;
  return 0;
}
