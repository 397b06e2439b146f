/* ember.dtype, ember.device, ember.Size and ember.Generator. */
#include <time.h>

#include "python/ember_py.h"

/* ---- dtype ---------------------------------------------------------------------------- */

static EmDtypeObject *dtype_objs[EM_DTYPE_COUNT];

PyObject *emp_dtype_obj(em_dtype dt) {
  if ((int)dt < 0 || dt >= EM_DTYPE_COUNT) return Py_None;
  return (PyObject *)dtype_objs[dt];
}

static PyObject *dtype_repr(PyObject *self) {
  return PyUnicode_FromFormat("ember.%s", em_dtype_name(((EmDtypeObject *)self)->dtype));
}

static PyObject *dtype_reduce(PyObject *self, PyObject *unused) {
  return PyUnicode_FromString(em_dtype_name(((EmDtypeObject *)self)->dtype));
}

static PyObject *dtype_is_float(PyObject *self, void *c) {
  return PyBool_FromLong(em_dtype_is_float(((EmDtypeObject *)self)->dtype));
}
static PyObject *dtype_is_signed(PyObject *self, void *c) {
  return PyBool_FromLong(em_dtype_get_info(((EmDtypeObject *)self)->dtype)->is_signed);
}
static PyObject *dtype_false(PyObject *self, void *c) { Py_RETURN_FALSE; }
static PyObject *dtype_itemsize(PyObject *self, void *c) {
  return PyLong_FromSize_t(em_dtype_size(((EmDtypeObject *)self)->dtype));
}

static PyGetSetDef dtype_getset[] = {
    {"is_floating_point", dtype_is_float, NULL, "True for float16/bfloat16/float32/float64", NULL},
    {"is_signed", dtype_is_signed, NULL, NULL, NULL},
    {"is_complex", dtype_false, NULL, NULL, NULL},
    {"itemsize", dtype_itemsize, NULL, "bytes per element", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef dtype_methods[] = {
    {"__reduce__", dtype_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyTypeObject EmDtype_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.dtype",
    .tp_basicsize = sizeof(EmDtypeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_repr = dtype_repr,
    .tp_getset = dtype_getset,
    .tp_methods = dtype_methods,
    .tp_doc = "An element type (ember.float32, ember.int64, ...).",
};

/* ---- device ------------------------------------------------------------------------------ */

static PyObject *device_new_obj(em_device d, bool has_index) {
  EmDeviceObject *o = PyObject_New(EmDeviceObject, &EmDevice_Type);
  if (!o) return NULL;
  o->device = d;
  o->has_index = has_index;
  return (PyObject *)o;
}

PyObject *emp_device_obj(em_device d) { return device_new_obj(d, d.type != EM_CPU); }

static PyObject *device_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  static char *names[] = {"type", "index", NULL};
  PyObject *type = NULL, *index = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:device", names, &type, &index)) return NULL;
  if (Py_TYPE(type) == &EmDevice_Type && index == Py_None) return Py_NewRef(type);
  if (PyLong_Check(type) && !PyBool_Check(type)) {
    long i = PyLong_AsLong(type);
    if (i < 0 || i > INT16_MAX) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "Device index must not be negative");
      return NULL;
    }
    return device_new_obj(EM_DEVICE_CUDA(i), true);
  }
  if (!PyUnicode_Check(type)) {
    PyErr_Format(PyExc_TypeError, "device(): argument 'type' must be str, not %s",
                 Py_TYPE(type)->tp_name);
    return NULL;
  }
  const char *s = PyUnicode_AsUTF8(type);
  if (!s) return NULL;
  em_device d;
  if (em_device_parse(s, &d)) return emp_raise();
  bool has_index = strchr(s, ':') != NULL;
  if (index != Py_None) {
    if (has_index) {
      PyErr_Format(PyExc_RuntimeError, "type (string) must not include an index because index was "
                   "passed explicitly: %s", s);
      return NULL;
    }
    long i = PyLong_AsLong(index);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i > INT16_MAX) {
      PyErr_Format(PyExc_RuntimeError, "Device index must not be negative");
      return NULL;
    }
    d.index = (int16_t)i;
    has_index = true;
  }
  return device_new_obj(d, has_index);
}

static const char *device_type_name(em_device d) { return d.type == EM_CPU ? "cpu" : "cuda"; }

static PyObject *device_repr(PyObject *self) {
  EmDeviceObject *o = (EmDeviceObject *)self;
  if (!o->has_index) return PyUnicode_FromFormat("device(type='%s')", device_type_name(o->device));
  return PyUnicode_FromFormat("device(type='%s', index=%d)", device_type_name(o->device),
                              (int)o->device.index);
}

static PyObject *device_str(PyObject *self) {
  EmDeviceObject *o = (EmDeviceObject *)self;
  if (!o->has_index) return PyUnicode_FromString(device_type_name(o->device));
  return PyUnicode_FromFormat("%s:%d", device_type_name(o->device), (int)o->device.index);
}

static PyObject *device_richcompare(PyObject *a, PyObject *b, int op) {
  if (Py_TYPE(b) != &EmDevice_Type || (op != Py_EQ && op != Py_NE)) Py_RETURN_NOTIMPLEMENTED;
  EmDeviceObject *x = (EmDeviceObject *)a, *y = (EmDeviceObject *)b;
  bool eq = x->device.type == y->device.type && x->has_index == y->has_index &&
            (!x->has_index || x->device.index == y->device.index);
  return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t device_hash(PyObject *self) {
  EmDeviceObject *o = (EmDeviceObject *)self;
  return (Py_hash_t)(o->device.type * 1000003 + (o->has_index ? o->device.index + 1 : 0));
}

static PyObject *device_get_type(PyObject *self, void *c) {
  return PyUnicode_FromString(device_type_name(((EmDeviceObject *)self)->device));
}
static PyObject *device_get_index(PyObject *self, void *c) {
  EmDeviceObject *o = (EmDeviceObject *)self;
  if (!o->has_index) Py_RETURN_NONE;
  return PyLong_FromLong(o->device.index);
}

static PyObject *device_reduce(PyObject *self, PyObject *unused) {
  PyObject *s = device_str(self);
  if (!s) return NULL;
  return Py_BuildValue("(O(N))", (PyObject *)&EmDevice_Type, s);
}

static PyGetSetDef device_getset[] = {
    {"type", device_get_type, NULL, NULL, NULL},
    {"index", device_get_index, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyMethodDef device_methods[] = {
    {"__reduce__", device_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyTypeObject EmDevice_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.device",
    .tp_basicsize = sizeof(EmDeviceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = device_new,
    .tp_repr = device_repr,
    .tp_str = device_str,
    .tp_richcompare = device_richcompare,
    .tp_hash = device_hash,
    .tp_getset = device_getset,
    .tp_methods = device_methods,
    .tp_doc = "device(type, index=None): where a tensor lives ('cpu', 'cuda:0').",
};

/* ---- Size ------------------------------------------------------------------------------------ */

PyObject *emp_size_obj(int ndim, const int64_t *d) {
  PyObject *s = EmSize_Type.tp_alloc(&EmSize_Type, ndim);
  if (!s) return NULL;
  for (int i = 0; i < ndim; i++) {
    PyObject *v = PyLong_FromLongLong(d[i]);
    if (!v) {
      Py_DECREF(s);
      return NULL;
    }
    PyTuple_SET_ITEM(s, i, v);
  }
  return s;
}

static PyObject *size_from_tuple(PyObject *t) {
  Py_ssize_t n = PyTuple_GET_SIZE(t);
  PyObject *s = EmSize_Type.tp_alloc(&EmSize_Type, n);
  if (!s) return NULL;
  for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(s, i, Py_NewRef(PyTuple_GET_ITEM(t, i)));
  return s;
}

static PyObject *size_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  PyObject *seq = NULL;
  if (!PyArg_ParseTuple(args, "|O:Size", &seq)) return NULL;
  if (!seq) return EmSize_Type.tp_alloc(&EmSize_Type, 0);
  PyObject *t = PySequence_Tuple(seq);
  if (!t) return NULL;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
    PyObject *v = PyTuple_GET_ITEM(t, i);
    if (!PyLong_Check(v) && !(emp_is_tensor(v) && emp_tensor(v)->numel == 1)) {
      PyErr_Format(PyExc_TypeError, "ember.Size() takes an iterable of 'int' (item %zd is '%s')",
                   i, Py_TYPE(v)->tp_name);
      Py_DECREF(t);
      return NULL;
    }
    if (!PyLong_Check(v)) {
      int64_t x;
      if (emp_arg_int(v, "Size", "sizes", &x) < 0) {
        Py_DECREF(t);
        return NULL;
      }
      PyObject *nv = PyLong_FromLongLong(x);
      if (!nv || PyTuple_SetItem(t, i, nv) < 0) {
        Py_DECREF(t);
        return NULL;
      }
    }
  }
  PyObject *s = size_from_tuple(t);
  Py_DECREF(t);
  return s;
}

static PyObject *size_repr(PyObject *self) {
  Py_ssize_t n = PyTuple_GET_SIZE(self);
  PyObject *parts = PyList_New(n);
  if (!parts) return NULL;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *r = PyObject_Repr(PyTuple_GET_ITEM(self, i));
    if (!r) {
      Py_DECREF(parts);
      return NULL;
    }
    PyList_SET_ITEM(parts, i, r);
  }
  PyObject *sep = PyUnicode_FromString(", ");
  PyObject *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
  Py_XDECREF(sep);
  Py_DECREF(parts);
  if (!joined) return NULL;
  PyObject *r = PyUnicode_FromFormat("ember.Size([%U])", joined);
  Py_DECREF(joined);
  return r;
}

static PyObject *size_subscript(PyObject *self, PyObject *key) {
  PyObject *r = PyTuple_Type.tp_as_mapping->mp_subscript(self, key);
  if (r && PySlice_Check(key) && PyTuple_Check(r)) {
    PyObject *s = size_from_tuple(r);
    Py_DECREF(r);
    return s;
  }
  return r;
}

static PyObject *size_concat(PyObject *a, PyObject *b) {
  PyObject *r = PyTuple_Type.tp_as_sequence->sq_concat(a, b);
  if (!r) return NULL;
  PyObject *s = size_from_tuple(r);
  Py_DECREF(r);
  return s;
}

static PyObject *size_numel(PyObject *self, PyObject *unused) {
  int64_t n = 1;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self); i++) {
    long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(self, i));
    if (v == -1 && PyErr_Occurred()) return NULL;
    n *= v;
  }
  return PyLong_FromLongLong(n);
}

static PyObject *size_reduce(PyObject *self, PyObject *unused) {
  PyObject *t = PyTuple_GetSlice(self, 0, PyTuple_GET_SIZE(self));
  if (!t) return NULL;
  return Py_BuildValue("(O(N))", (PyObject *)&EmSize_Type, t);
}

static PyMethodDef size_methods[] = {
    {"numel", size_numel, METH_NOARGS, "Number of elements a tensor of this size holds."},
    {"__reduce__", size_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};
static PyMappingMethods size_mapping;
static PySequenceMethods size_sequence;

PyTypeObject EmSize_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.Size",
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_TUPLE_SUBCLASS,
    .tp_new = size_new,
    .tp_repr = size_repr,
    .tp_methods = size_methods,
    .tp_as_mapping = &size_mapping,
    .tp_as_sequence = &size_sequence,
    .tp_doc = "The shape of a tensor: a tuple of ints.",
};

/* ---- Generator ------------------------------------------------------------------------------- */

static EmGeneratorObject *default_gen;

static PyObject *gen_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
  static char *names[] = {"device", NULL};
  PyObject *dev = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:Generator", names, &dev)) return NULL;
  em_device d = EM_DEVICE_CPU;
  if (emp_arg_device(dev, "Generator", "device", &d) < 0) return NULL;
  EmGeneratorObject *o = (EmGeneratorObject *)tp->tp_alloc(tp, 0);
  if (!o) return NULL;
  o->g = em_generator_create(67280421310721ULL); /* PyTorch's default seed */
  if (!o->g) {
    Py_DECREF(o);
    return emp_raise();
  }
  o->owned = true;
  return (PyObject *)o;
}

static void gen_dealloc(PyObject *self) {
  EmGeneratorObject *o = (EmGeneratorObject *)self;
  if (o->owned && o->g) em_generator_destroy(o->g);
  Py_TYPE(self)->tp_free(self);
}

static PyObject *gen_manual_seed(PyObject *self, PyObject *seed) {
  int64_t s;
  if (emp_arg_int(seed, "manual_seed", "seed", &s) < 0) return NULL;
  em_generator_set_seed(((EmGeneratorObject *)self)->g, (uint64_t)s);
  return Py_NewRef(self);
}

static PyObject *gen_seed(PyObject *self, PyObject *unused) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t s = (uint64_t)ts.tv_nsec * 6364136223846793005ULL ^ (uint64_t)ts.tv_sec ^
               (uint64_t)(uintptr_t)self;
  s &= (1ULL << 63) - 1;
  em_generator_set_seed(((EmGeneratorObject *)self)->g, s);
  return PyLong_FromUnsignedLongLong(s);
}

static PyObject *gen_initial_seed(PyObject *self, PyObject *unused) {
  return PyLong_FromUnsignedLongLong(em_generator_seed(((EmGeneratorObject *)self)->g));
}

/* The state is (seed, offset) as a 16-byte uint8 tensor, as PyTorch's
 * get_state returns a ByteTensor. */
static PyObject *gen_get_state(PyObject *self, PyObject *unused) {
  uint64_t st[2];
  em_generator_get_state(((EmGeneratorObject *)self)->g, &st[0], &st[1]);
  return emp_wrap(em_tensor_from_data(st, EM_DIMS(16), EM_UINT8));
}

static PyObject *gen_set_state(PyObject *self, PyObject *state) {
  em_tensor *t;
  if (emp_arg_tensor(state, "set_state", "new_state", &t) < 0) return NULL;
  if (t->dtype != EM_UINT8 || t->numel != 16) {
    PyErr_Format(PyExc_RuntimeError,
                 "set_state: expected a uint8 tensor of 16 elements (from get_state), got %s %s",
                 em_dtype_name((em_dtype)t->dtype), em__tshape(t));
    return NULL;
  }
  em_tensor *c = em_tensor_contiguous(t);
  if (!c) return emp_raise();
  uint64_t st[2];
  memcpy(st, em_tensor_data(c), 16);
  em_tensor_release(c);
  em_generator_set_state(((EmGeneratorObject *)self)->g, st[0], st[1]);
  return Py_NewRef(self);
}

static PyObject *gen_device(PyObject *self, void *c) { return device_new_obj(EM_DEVICE_CPU, false); }

static PyMethodDef gen_methods[] = {
    {"manual_seed", gen_manual_seed, METH_O, "Seeds the generator; returns it."},
    {"seed", gen_seed, METH_NOARGS, "Seeds from a non-deterministic source; returns the seed."},
    {"initial_seed", gen_initial_seed, METH_NOARGS, NULL},
    {"get_state", gen_get_state, METH_NOARGS, NULL},
    {"set_state", gen_set_state, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef gen_getset[] = {
    {"device", gen_device, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject EmGenerator_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ember.Generator",
    .tp_basicsize = sizeof(EmGeneratorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = gen_new,
    .tp_dealloc = gen_dealloc,
    .tp_methods = gen_methods,
    .tp_getset = gen_getset,
    .tp_doc = "Generator(device='cpu'): a counter-based random number generator.",
};

int emp_arg_generator(PyObject *o, const char *fname, em_generator **out) {
  if (!o || o == Py_None) return 0;
  if (!PyObject_TypeCheck(o, &EmGenerator_Type)) {
    PyErr_Format(PyExc_TypeError, "%s(): argument 'generator' must be ember.Generator, not %s",
                 fname, Py_TYPE(o)->tp_name);
    return -1;
  }
  *out = ((EmGeneratorObject *)o)->g;
  return 0;
}

/* ---- module functions -------------------------------------------------------------------------- */

static PyObject *f_manual_seed(PyObject *m, PyObject *seed) {
  int64_t s;
  if (emp_arg_int(seed, "manual_seed", "seed", &s) < 0) return NULL;
  em_manual_seed((uint64_t)s);
  return Py_NewRef(default_gen);
}
static PyObject *f_seed(PyObject *m, PyObject *unused) { return gen_seed((PyObject *)default_gen, NULL); }
static PyObject *f_initial_seed(PyObject *m, PyObject *unused) {
  return gen_initial_seed((PyObject *)default_gen, NULL);
}
static PyObject *f_get_rng_state(PyObject *m, PyObject *unused) {
  return gen_get_state((PyObject *)default_gen, NULL);
}
static PyObject *f_set_rng_state(PyObject *m, PyObject *state) {
  PyObject *r = gen_set_state((PyObject *)default_gen, state);
  if (!r) return NULL;
  Py_DECREF(r);
  Py_RETURN_NONE;
}
static PyObject *f_set_num_threads(PyObject *m, PyObject *n) {
  int64_t v;
  if (emp_arg_int(n, "set_num_threads", "int", &v) < 0) return NULL;
  if (v < 1 || v > 4096) {
    PyErr_Format(PyExc_RuntimeError, "set_num_threads: number of threads must be positive, got %lld",
                 (long long)v);
    return NULL;
  }
  em_set_num_threads((int)v);
  Py_RETURN_NONE;
}
static PyObject *f_get_num_threads(PyObject *m, PyObject *unused) {
  return PyLong_FromLong(em_get_num_threads());
}
static PyObject *f_get_default_dtype(PyObject *m, PyObject *unused) {
  return Py_NewRef(emp_dtype_obj(em_get_default_dtype()));
}
static PyObject *f_set_default_dtype(PyObject *m, PyObject *d) {
  em_dtype dt = EM_DTYPE_UNDEFINED;
  if (Py_TYPE(d) != &EmDtype_Type) {
    PyErr_Format(PyExc_TypeError, "set_default_dtype(): argument 'd' must be ember.dtype, not %s",
                 Py_TYPE(d)->tp_name);
    return NULL;
  }
  dt = ((EmDtypeObject *)d)->dtype;
  if (!em_dtype_is_float(dt)) {
    PyErr_Format(PyExc_TypeError, "only floating-point types are supported as the default type");
    return NULL;
  }
  if (em_set_default_dtype(dt)) return emp_raise();
  Py_RETURN_NONE;
}
static PyObject *f_config(PyObject *m, PyObject *unused) {
  return PyUnicode_FromString(em_config_string());
}

/* _raise_status(code, message): raises what an em error with that status
 * raises (tests check the EM_STATUS_MAP mapping). */
static PyObject *f_raise_status(PyObject *m, PyObject *args) {
  int code;
  const char *msg;
  if (!PyArg_ParseTuple(args, "is:_raise_status", &code, &msg)) return NULL;
  if (code <= 0 || code >= EM_STATUS_COUNT) {
    PyErr_Format(PyExc_ValueError, "_raise_status: no status %d", code);
    return NULL;
  }
  em_set_error((em_status)code, "%s", msg);
  return emp_raise();
}

static PyObject *f_status_names(PyObject *m, PyObject *unused) {
  PyObject *d = PyDict_New();
  for (int i = 1; d && i < EM_STATUS_COUNT; i++) {
    PyObject *v = Py_BuildValue("(ss)", em_status_name((em_status)i), em_status_pyexc((em_status)i));
    PyObject *k = PyLong_FromLong(i);
    int rc = v && k ? PyDict_SetItem(d, k, v) : -1;
    Py_XDECREF(v);
    Py_XDECREF(k);
    if (rc < 0) {
      Py_CLEAR(d);
      break;
    }
  }
  return d;
}

PyMethodDef emp_types_functions[] = {
    {"_raise_status", f_raise_status, METH_VARARGS, NULL},
    {"_status_names", f_status_names, METH_NOARGS, "{code: (description, Python exception)}"},
    {"manual_seed", f_manual_seed, METH_O, "Seeds the default generator; returns it."},
    {"seed", f_seed, METH_NOARGS, NULL},
    {"initial_seed", f_initial_seed, METH_NOARGS, NULL},
    {"get_rng_state", f_get_rng_state, METH_NOARGS, NULL},
    {"set_rng_state", f_set_rng_state, METH_O, NULL},
    {"set_num_threads", f_set_num_threads, METH_O, "Threads for ember's CPU kernels and BLAS."},
    {"get_num_threads", f_get_num_threads, METH_NOARGS, NULL},
    {"get_default_dtype", f_get_default_dtype, METH_NOARGS, NULL},
    {"set_default_dtype", f_set_default_dtype, METH_O, NULL},
    {"_config", f_config, METH_NOARGS, "ember's build and run-time configuration."},
    {NULL, NULL, 0, NULL},
};

int emp_types_init(PyObject *m) {
  EmSize_Type.tp_base = &PyTuple_Type;
  size_mapping = *PyTuple_Type.tp_as_mapping;
  size_mapping.mp_subscript = size_subscript;
  size_sequence = *PyTuple_Type.tp_as_sequence;
  size_sequence.sq_concat = size_concat;
  if (PyType_Ready(&EmDtype_Type) < 0 || PyType_Ready(&EmDevice_Type) < 0 ||
      PyType_Ready(&EmSize_Type) < 0 || PyType_Ready(&EmGenerator_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "dtype", (PyObject *)&EmDtype_Type) < 0 ||
      PyModule_AddObjectRef(m, "device", (PyObject *)&EmDevice_Type) < 0 ||
      PyModule_AddObjectRef(m, "Size", (PyObject *)&EmSize_Type) < 0 ||
      PyModule_AddObjectRef(m, "Generator", (PyObject *)&EmGenerator_Type) < 0)
    return -1;
  for (int i = 0; i < EM_DTYPE_COUNT; i++) {
    EmDtypeObject *o = PyObject_New(EmDtypeObject, &EmDtype_Type);
    if (!o) return -1;
    o->dtype = (em_dtype)i;
    dtype_objs[i] = o; /* immortal for the module's life */
    if (PyModule_AddObjectRef(m, em_dtype_name((em_dtype)i), (PyObject *)o) < 0) return -1;
  }
  static const struct {
    const char *name;
    em_dtype dt;
  } aliases[] = {
      {"float", EM_FLOAT32}, {"double", EM_FLOAT64}, {"half", EM_FLOAT16}, {"short", EM_INT16},
      {"int", EM_INT32},     {"long", EM_INT64},     {"bool", EM_BOOL},    {"char", EM_INT8},
      {"byte", EM_UINT8},
  };
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (PyModule_AddObjectRef(m, aliases[i].name, (PyObject *)dtype_objs[aliases[i].dt]) < 0)
      return -1;
  default_gen = PyObject_New(EmGeneratorObject, &EmGenerator_Type);
  if (!default_gen) return -1;
  default_gen->g = em_default_generator();
  default_gen->owned = false;
  if (PyModule_AddObject(m, "default_generator", (PyObject *)default_gen) < 0) return -1;
  Py_INCREF(default_gen); /* keep our pointer valid */
  return 0;
}
