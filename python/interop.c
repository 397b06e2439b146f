/* NumPy and DLPack interop without copies.
 *
 *  - Tensors export the buffer protocol (format, shape, byte strides), so
 *    numpy.asarray(t), memoryview(t) and Tensor.numpy() share memory; the
 *    buffer holds a reference to the tensor object and to the storage, so
 *    the memory outlives any later `.data =` swap.
 *  - ember.from_numpy(a) and ember.as_tensor(a) wrap any buffer exporter:
 *    the tensor's storage keeps the Py_buffer (and with it the array)
 *    until the last view is released.
 *  - __array_interface__ (version 3) for consumers that prefer it.
 *  - DLPack: Tensor.__dlpack__ / __dlpack_device__ and ember.from_dlpack
 *    (any object with __dlpack__, or a "dltensor" capsule). */
#include "python/ember_py.h"

/* ---- dtype <-> buffer format ---------------------------------------------------------------- */

static const char *dtype_format(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return "f";
    case EM_FLOAT64: return "d";
    case EM_FLOAT16: return "e";
    case EM_INT8: return "b";
    case EM_INT16: return "h";
    case EM_INT32: return "i";
    case EM_INT64: return sizeof(long) == 8 ? "l" : "q"; /* NumPy: int64 is "l" on LP64 */
    case EM_UINT8: return "B";
    case EM_BOOL: return "?";
    default: return NULL;
  }
}

static const char *dtype_typestr(em_dtype dt) {
  switch (dt) {
    case EM_FLOAT32: return "<f4";
    case EM_FLOAT64: return "<f8";
    case EM_FLOAT16: return "<f2";
    case EM_INT8: return "|i1";
    case EM_INT16: return "<i2";
    case EM_INT32: return "<i4";
    case EM_INT64: return "<i8";
    case EM_UINT8: return "|u1";
    case EM_BOOL: return "|b1";
    default: return NULL;
  }
}

/* A struct-module format (as PEP 3118 buffers carry) -> dtype; UNDEFINED
 * when unsupported. */
static em_dtype format_dtype(const char *fmt, Py_ssize_t itemsize) {
  if (!fmt) return itemsize == 1 ? EM_UINT8 : EM_DTYPE_UNDEFINED;
  if (*fmt == '@' || *fmt == '=' || *fmt == '<' || (*fmt == '|')) fmt++;
  else if ((*fmt == '>' || *fmt == '!') && itemsize > 1) return EM_DTYPE_UNDEFINED;
  else if (*fmt == '>' || *fmt == '!') fmt++;
  if (fmt[0] == '\0' || fmt[1] != '\0') return EM_DTYPE_UNDEFINED;
  switch (fmt[0]) {
    case 'f': return itemsize == 4 ? EM_FLOAT32 : EM_DTYPE_UNDEFINED;
    case 'd': return itemsize == 8 ? EM_FLOAT64 : EM_DTYPE_UNDEFINED;
    case 'e': return itemsize == 2 ? EM_FLOAT16 : EM_DTYPE_UNDEFINED;
    case 'b': return EM_INT8;
    case 'B': return EM_UINT8;
    case '?': return EM_BOOL;
    case 'h': return itemsize == 2 ? EM_INT16 : EM_DTYPE_UNDEFINED;
    case 'i': case 'l': case 'q':
      return itemsize == 4 ? EM_INT32 : itemsize == 8 ? EM_INT64 : itemsize == 2 ? EM_INT16 : EM_DTYPE_UNDEFINED;
    default: return EM_DTYPE_UNDEFINED;
  }
}

int emp_is_ndarray(PyObject *o) {
  if (emp_is_tensor(o) || PyBytes_Check(o) || PyByteArray_Check(o) || PyUnicode_Check(o)) return 0;
  return PyObject_CheckBuffer(o);
}

/* The dtype of a NumPy scalar (np.float32(1), np.int64(2), np.bool_(1)):
 * 1 when o is one, 0 when not. */
int emp_numpy_scalar_dtype(PyObject *o, em_dtype *dt) {
  if (PyLong_CheckExact(o) || PyFloat_CheckExact(o) || PyBool_Check(o) || emp_is_tensor(o) ||
      !PyObject_CheckBuffer(o) || PySequence_Check(o))
    return 0;
  Py_buffer v;
  if (PyObject_GetBuffer(o, &v, PyBUF_FORMAT | PyBUF_RECORDS_RO) < 0) {
    PyErr_Clear();
    return 0;
  }
  em_dtype d = v.ndim == 0 ? format_dtype(v.format, v.itemsize) : EM_DTYPE_UNDEFINED;
  PyBuffer_Release(&v);
  if (d == EM_DTYPE_UNDEFINED) return 0;
  *dt = d;
  return 1;
}

/* ---- arrays -> tensors --------------------------------------------------------------------------- */

static void buffer_deleter(void *data, void *ctx) {
  Py_buffer *v = ctx;
  PyGILState_STATE g;
  if (emp_gil_enter(&g)) {
    PyBuffer_Release(v);
    emp_gil_leave(g);
  }
  PyMem_RawFree(v);
}

em_tensor *emp_tensor_from_buffer(PyObject *o, bool writable_required) {
  Py_buffer *v = PyMem_RawMalloc(sizeof *v);
  if (!v) {
    PyErr_NoMemory();
    return NULL;
  }
  if (PyObject_GetBuffer(o, v, PyBUF_RECORDS) < 0) {
    if (writable_required) {
      PyMem_RawFree(v);
      return NULL;
    }
    PyErr_Clear();
    if (PyObject_GetBuffer(o, v, PyBUF_RECORDS_RO) < 0) {
      PyMem_RawFree(v);
      return NULL;
    }
  }
  em_dtype dt = format_dtype(v->format, v->itemsize);
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
  if (dt == EM_DTYPE_UNDEFINED) {
    PyErr_Format(PyExc_TypeError,
                 "can't convert np.ndarray of type '%s' (itemsize %zd). The only supported types "
                 "are: float64, float32, float16, int64, int32, int16, int8, uint8, and bool.",
                 v->format ? v->format : "B", v->itemsize);
    goto fail;
  }
  if (v->ndim > EM_MAX_DIMS) {
    PyErr_Format(PyExc_ValueError, "arrays of more than %d dimensions are not supported", EM_MAX_DIMS);
    goto fail;
  }
  for (int i = 0; i < v->ndim; i++) {
    shape[i] = v->shape[i];
    Py_ssize_t s = v->strides ? v->strides[i] : 0;
    if (s < 0) {
      PyErr_SetString(PyExc_ValueError,
                      "At least one stride in the given numpy array is negative, and tensors with "
                      "negative strides are not currently supported. (You can probably work "
                      "around this by making a copy of your array  with array.copy().) ");
      goto fail;
    }
    if (s % v->itemsize) {
      PyErr_SetString(PyExc_ValueError,
                      "given numpy array strides not a multiple of the element byte size. Copy "
                      "the numpy array to reallocate the memory.");
      goto fail;
    }
    strides[i] = s / v->itemsize;
  }
  em_tensor *t = em_tensor_from_blob(v->buf, v->ndim, shape, v->strides ? strides : NULL, dt,
                                     EM_DEVICE_CPU, buffer_deleter, v);
  if (!t) {
    emp_raise();
    goto fail;
  }
  return t;
fail:
  PyBuffer_Release(v);
  PyMem_RawFree(v);
  return NULL;
}

static PyObject *np_ndarray_type(void) {
  PyObject *mods = PyImport_GetModuleDict();
  PyObject *np = mods ? PyDict_GetItemString(mods, "numpy") : NULL;
  if (!np) return NULL;
  PyObject *nd = PyObject_GetAttrString(np, "ndarray");
  if (!nd) PyErr_Clear();
  return nd;
}

static PyObject *f_from_numpy(PyObject *mod, PyObject *a) {
  PyObject *nd = np_ndarray_type();
  int ok = nd && PyObject_IsInstance(a, nd) == 1;
  Py_XDECREF(nd);
  if (!ok) {
    PyErr_Format(PyExc_TypeError, "expected np.ndarray (got %s)", Py_TYPE(a)->tp_name);
    return NULL;
  }
  em_tensor *t = emp_tensor_from_buffer(a, false);
  if (!t) return NULL;
  return emp_wrap(t);
}

/* ---- tensors -> buffers ---------------------------------------------------------------------------- */

typedef struct buf_internal {
  em_storage *storage; /* retained while the buffer lives */
  Py_ssize_t shape[EM_MAX_DIMS];
  Py_ssize_t strides[EM_MAX_DIMS];
} buf_internal;

static int export_check(em_tensor *t, bool for_numpy) {
  if (t->requires_grad) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                    "instead.");
    return -1;
  }
  if (t->device.type != EM_CPU) {
    char b[16];
    PyErr_Format(PyExc_TypeError,
                 "can't convert %s device type tensor to numpy. Use Tensor.cpu() to copy the "
                 "tensor to host memory first.",
                 em_device_str(t->device, b, sizeof b));
    return -1;
  }
  if (!dtype_format((em_dtype)t->dtype)) {
    PyErr_Format(PyExc_TypeError, "Got unsupported ScalarType %s",
                 t->dtype == EM_BFLOAT16 ? "BFloat16" : em_dtype_name((em_dtype)t->dtype));
    return -1;
  }
  (void)for_numpy;
  return 0;
}

int emp_getbuffer(PyObject *self, Py_buffer *view, int flags) {
  em_tensor *t = emp_tensor(self);
  view->obj = NULL;
  if (export_check(t, false) < 0) return -1;
  bool contig = em_tensor_is_contiguous(t);
  if (!contig && ((flags & PyBUF_STRIDES) != PyBUF_STRIDES ||
                  (flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS ||
                  (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS ||
                  (flags & PyBUF_ANY_CONTIGUOUS) == PyBUF_ANY_CONTIGUOUS)) {
    PyErr_SetString(PyExc_BufferError, "tensor is not contiguous");
    return -1;
  }
  buf_internal *in = PyMem_Malloc(sizeof *in);
  if (!in) {
    PyErr_NoMemory();
    return -1;
  }
  size_t isz = em_dtype_size((em_dtype)t->dtype);
  for (int i = 0; i < t->ndim; i++) {
    in->shape[i] = (Py_ssize_t)t->shape[i];
    in->strides[i] = (Py_ssize_t)(t->strides[i] * (int64_t)isz);
  }
  in->storage = t->storage;
  em_storage_retain(in->storage);
  view->buf = em__data_ptr(t);
  view->obj = Py_NewRef(self);
  view->len = (Py_ssize_t)(t->numel * (int64_t)isz);
  view->readonly = 0;
  view->itemsize = (Py_ssize_t)isz;
  view->format = (flags & PyBUF_FORMAT) ? (char *)dtype_format((em_dtype)t->dtype) : NULL;
  view->ndim = t->ndim;
  view->shape = (flags & PyBUF_ND) == PyBUF_ND ? in->shape : NULL;
  view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? in->strides : NULL;
  view->suboffsets = NULL;
  view->internal = in;
  return 0;
}

void emp_releasebuffer(PyObject *self, Py_buffer *view) {
  buf_internal *in = view->internal;
  if (in) {
    em_storage_release(in->storage);
    PyMem_Free(in);
    view->internal = NULL;
  }
}

static PyObject *numpy_module(void) {
  static PyObject *np;
  if (!np) np = PyImport_ImportModule("numpy");
  return np;
}

static PyObject *m_numpy(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"*", "force", NULL};
  PyObject *a[1] = {NULL};
  if ((nargs || kw) && emp_parse("numpy", names, 0, args, nargs, kw, a) < 0) return NULL;
  bool force = false;
  if (a[0] && emp_arg_bool(a[0], "numpy", "force", &force) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  PyObject *np = numpy_module();
  if (!np) return NULL;
  if (force && (t->requires_grad || t->device.type != EM_CPU)) {
    em_tensor *d = em_tensor_detach(t), *c = d ? em_tensor_to_device(d, EM_DEVICE_CPU) : NULL;
    em_tensor_release(d);
    PyObject *o = emp_wrap(c);
    if (!o) return NULL;
    PyObject *r = PyObject_CallMethod(np, "asarray", "O", o);
    Py_DECREF(o);
    return r;
  }
  if (t->requires_grad) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                    "instead.");
    return NULL;
  }
  if (export_check(t, true) < 0) return NULL;
  return PyObject_CallMethod(np, "asarray", "O", self);
}

static PyObject *get_array_interface(PyObject *self, void *c) {
  em_tensor *t = emp_tensor(self);
  if (export_check(t, true) < 0) return NULL;
  size_t isz = em_dtype_size((em_dtype)t->dtype);
  PyObject *shape = emp_int_tuple(t->ndim, t->shape);
  PyObject *strides = NULL;
  if (em_tensor_is_contiguous(t)) {
    strides = Py_NewRef(Py_None);
  } else {
    int64_t b[EM_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) b[i] = t->strides[i] * (int64_t)isz;
    strides = emp_int_tuple(t->ndim, b);
  }
  PyObject *ptr = PyLong_FromVoidPtr(em__data_ptr(t));
  PyObject *r = NULL;
  if (shape && strides && ptr)
    r = Py_BuildValue("{s:N,s:s,s:(NO),s:N,s:i}", "shape", shape, "typestr",
                      dtype_typestr((em_dtype)t->dtype), "data", ptr, Py_False, "strides", strides,
                      "version", 3);
  else
    Py_XDECREF(shape), Py_XDECREF(strides), Py_XDECREF(ptr);
  return r;
}

/* ---- DLPack ---------------------------------------------------------------------------------------------
 * The ABI (dlpack.h v0.6+), declared here to avoid a build dependency. */

typedef struct { int32_t device_type, device_id; } DLDevice;
typedef struct { uint8_t code, bits; uint16_t lanes; } DLDataType;
typedef struct {
  void *data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;
  int64_t *strides;
  uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
  DLTensor dl_tensor;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

enum { kDLCPU = 1, kDLCUDA = 2 };
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLBool = 6 };

typedef struct dl_export {
  DLManagedTensor m;
  em_tensor *t; /* a detached alias, retained */
  int64_t shape[EM_MAX_DIMS], strides[EM_MAX_DIMS];
} dl_export;

static void dl_export_delete(DLManagedTensor *m) {
  dl_export *e = (dl_export *)m;
  em_tensor_release(e->t);
  free(e);
}

static void dl_capsule_destructor(PyObject *cap) {
  if (!PyCapsule_IsValid(cap, "dltensor")) return; /* consumed */
  DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
  if (m && m->deleter) m->deleter(m);
}

static int dl_dtype(em_dtype dt, DLDataType *d) {
  d->lanes = 1;
  d->bits = (uint8_t)(em_dtype_size(dt) * 8);
  switch (dt) {
    case EM_FLOAT32: case EM_FLOAT64: case EM_FLOAT16: d->code = kDLFloat; return 0;
    case EM_BFLOAT16: d->code = kDLBfloat; return 0;
    case EM_INT8: case EM_INT16: case EM_INT32: case EM_INT64: d->code = kDLInt; return 0;
    case EM_UINT8: d->code = kDLUInt; return 0;
    case EM_BOOL: d->code = kDLBool; return 0;
    default: return -1;
  }
}

static PyObject *m_dlpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
  static const char *const names[] = {"stream", NULL};
  PyObject *a[1];
  if (emp_parse("__dlpack__", names, 0, args, nargs, kw, a) < 0) return NULL;
  em_tensor *t = emp_tensor(self);
  if (t->requires_grad) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Can't export tensors that require gradient, use tensor.detach()");
    return NULL;
  }
  dl_export *e = calloc(1, sizeof *e);
  if (!e) return PyErr_NoMemory();
  e->t = em_tensor_detach(t);
  if (!e->t) {
    free(e);
    return emp_raise();
  }
  memcpy(e->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  memcpy(e->strides, t->strides, sizeof(int64_t) * (size_t)t->ndim);
  DLTensor *d = &e->m.dl_tensor;
  d->data = t->storage->data;
  d->byte_offset = (uint64_t)(t->offset * (int64_t)em_dtype_size((em_dtype)t->dtype));
  d->device.device_type = t->device.type == EM_CPU ? kDLCPU : kDLCUDA;
  d->device.device_id = t->device.type == EM_CPU ? 0 : t->device.index;
  d->ndim = t->ndim;
  dl_dtype((em_dtype)t->dtype, &d->dtype);
  d->shape = e->shape;
  d->strides = e->strides;
  e->m.manager_ctx = e;
  e->m.deleter = dl_export_delete;
  PyObject *cap = PyCapsule_New(&e->m, "dltensor", dl_capsule_destructor);
  if (!cap) dl_export_delete(&e->m);
  return cap;
}

static PyObject *m_dlpack_device(PyObject *self, PyObject *unused) {
  em_tensor *t = emp_tensor(self);
  if (t->device.type == EM_CPU) return Py_BuildValue("(ii)", kDLCPU, 0);
  return Py_BuildValue("(ii)", kDLCUDA, (int)t->device.index);
}

static void dl_import_deleter(void *data, void *ctx) {
  DLManagedTensor *m = ctx;
  PyGILState_STATE g;
  if (emp_gil_enter(&g)) {
    if (m->deleter) m->deleter(m);
    emp_gil_leave(g);
  } else if (m->deleter) {
    m->deleter(m);
  }
}

static PyObject *f_from_dlpack(PyObject *mod, PyObject *ext) {
  PyObject *cap;
  if (PyCapsule_CheckExact(ext)) {
    cap = Py_NewRef(ext);
  } else {
    if (emp_is_tensor(ext)) return Py_NewRef(ext);
    cap = PyObject_CallMethod(ext, "__dlpack__", NULL);
    if (!cap) return NULL;
  }
  DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
  if (!m) {
    Py_DECREF(cap);
    PyErr_Clear();
    PyErr_SetString(PyExc_RuntimeError,
                    "from_dlpack received an invalid capsule. Note that DLTensor capsules can be "
                    "consumed only once, so you might have already constructed a tensor from it "
                    "once.");
    return NULL;
  }
  DLTensor *d = &m->dl_tensor;
  em_dtype dt = EM_DTYPE_UNDEFINED;
  if (d->dtype.lanes == 1) {
    switch (d->dtype.code) {
      case kDLFloat:
        dt = d->dtype.bits == 32 ? EM_FLOAT32 : d->dtype.bits == 64 ? EM_FLOAT64
             : d->dtype.bits == 16 ? EM_FLOAT16 : EM_DTYPE_UNDEFINED;
        break;
      case kDLBfloat: dt = d->dtype.bits == 16 ? EM_BFLOAT16 : EM_DTYPE_UNDEFINED; break;
      case kDLInt:
        dt = d->dtype.bits == 8 ? EM_INT8 : d->dtype.bits == 16 ? EM_INT16
             : d->dtype.bits == 32 ? EM_INT32 : d->dtype.bits == 64 ? EM_INT64 : EM_DTYPE_UNDEFINED;
        break;
      case kDLUInt: dt = d->dtype.bits == 8 ? EM_UINT8 : EM_DTYPE_UNDEFINED; break;
      case kDLBool: dt = d->dtype.bits == 8 ? EM_BOOL : EM_DTYPE_UNDEFINED; break;
    }
  }
  if (dt == EM_DTYPE_UNDEFINED) {
    Py_DECREF(cap);
    PyErr_Format(PyExc_TypeError, "from_dlpack: unsupported DLPack dtype (code %d, bits %d, lanes %d)",
                 d->dtype.code, d->dtype.bits, d->dtype.lanes);
    return NULL;
  }
  if (d->device.device_type != kDLCPU) {
    Py_DECREF(cap);
    PyErr_Format(PyExc_RuntimeError, "from_dlpack: device type %d is not supported (CPU only)",
                 d->device.device_type);
    return NULL;
  }
  if (d->ndim < 0 || d->ndim > EM_MAX_DIMS) {
    Py_DECREF(cap);
    PyErr_Format(PyExc_ValueError, "from_dlpack: %d dimensions are not supported", d->ndim);
    return NULL;
  }
  em_tensor *t = em_tensor_from_blob((char *)d->data + d->byte_offset, d->ndim, d->shape, d->strides,
                                     dt, EM_DEVICE_CPU, dl_import_deleter, m);
  if (!t) {
    Py_DECREF(cap);
    return emp_raise();
  }
  PyCapsule_SetName(cap, "used_dltensor");
  Py_DECREF(cap);
  return emp_wrap(t);
}

PyMethodDef emp_interop_methods[] = {
    {"numpy", EMP_FN(m_numpy), EMP_KW, "The tensor as a NumPy array sharing its memory."},
    {"__dlpack__", EMP_FN(m_dlpack), EMP_KW, NULL},
    {"__dlpack_device__", m_dlpack_device, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyGetSetDef emp_interop_getset[] = {
    {"__array_interface__", get_array_interface, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyMethodDef emp_interop_functions[] = {
    {"from_numpy", f_from_numpy, METH_O, "A tensor sharing the memory of a NumPy array."},
    {"from_dlpack", f_from_dlpack, METH_O, "A tensor sharing the memory of a DLPack producer."},
    {NULL, NULL, 0, NULL},
};

int emp_interop_init(PyObject *m) { return 0; }
