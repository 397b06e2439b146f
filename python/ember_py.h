/* ember._C internals shared by every binding file (core binding:
 * module.c, errors.c, args.c, types.c, tensor.c, create.c, ops.c,
 * ops_shape.c, indexing.c, interop.c, autograd.c; and the nn / optim /
 * data / distributed bindings built on top).
 *
 * Ownership: a Python tensor object (EmTensorObject) holds exactly one
 * reference to its em_tensor, and an em_tensor has at most one live Python
 * object: em_tensor.user points back at it (weak; cleared when the object
 * dies), so wrapping the same em_tensor twice (t.grad, a parameter handed
 * back by C) gives the same Python object, as PyTorch does. The binding
 * owns em_tensor.user; nothing else may use that slot.
 *
 * Writing a binding function:
 *
 *     static const char *const kw_addcmul[] = {"tensor1", "tensor2", "*", "value", NULL};
 *     static PyObject *f_foo(PyObject *mod, PyObject *const *args, Py_ssize_t nargs,
 *                            PyObject *kwnames) {
 *       PyObject *a[3];
 *       if (emp_parse("foo", kw_addcmul, 2, args, nargs, kwnames, a) < 0) return NULL;
 *       em_tensor *t1, *t2;
 *       em_scalar v = em_scalar_int(1);
 *       if (emp_arg_tensor(a[0], "foo", "tensor1", &t1) < 0 || ...) return NULL;
 *       em_tensor *r;
 *       EMP_NOGIL_IF(emp_big(t1), r = em_foo(t1, t2, v));
 *       return emp_wrap(r);   // steals r; NULL: raises the mapped exception
 *     }
 *
 * Errors: emp_raise() turns the thread's em error into the Python exception
 * that core/status.h's EM_STATUS_MAP names, with the C message (or restores
 * a Python exception a callback parked, see emp_park_exception).
 *
 * Callbacks from C (hooks, Function.backward, storage deleters, user_free)
 * may run on a thread that does not hold the GIL: wrap them in
 * emp_gil_enter / emp_gil_leave. A Python exception raised inside is parked
 * with emp_park_exception() (returns the em_status to hand back to C) and
 * re-raised by emp_raise() once the C call returns on the same thread.
 *
 * The GIL is released around calls that can take long: EMP_NOGIL_IF(cond,
 * stmt) with cond from emp_big*() (more than EMP_NOGIL_NUMEL elements), so
 * small ops pay nothing.
 *
 * Rule for autograd: the engine holds its own lock while it runs hooks and
 * Function.backward, which take the GIL. So every call that may take the
 * engine lock — em_backward*, em_ag_grad, em_tensor_register_hook,
 * em_tensor_register_post_accumulate_grad_hook, em_tensor_remove_hook (and
 * anything calling them, e.g. a DDP reducer registering its hooks) — must
 * run with the GIL released (EMP_NOGIL), or a thread holding the GIL and
 * waiting for the engine deadlocks with a hook waiting for the GIL.
 *
 * Interrupts: a kernel runs to completion; KeyboardInterrupt is raised as
 * soon as it returns. A backward stops between nodes (python/module.c's
 * SIGINT handler calls em_request_interrupt; backward and grad clear the
 * flag when they start). Loops in the binding
 * that walk Python objects (ember.tensor(list), tolist) poll
 * PyErr_CheckSignals every 2^20 elements; waits in C that can block long
 * should poll it too (with the GIL held). */
#ifndef EMBER_PY_H
#define EMBER_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "autograd/autograd.h"
#include "core/core.h"
#include "core/core_impl.h" /* element access, shape strings, error helpers */

#ifdef __cplusplus
extern "C" {
#endif

/* Casts a METH_FASTCALL / METH_KEYWORDS function to PyCFunction without
 * -Wcast-function-type complaining. */
#define EMP_FN(f) ((PyCFunction)(void (*)(void))(f))

typedef PyObject *(*emp_fastcall_kw)(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames);

/* ---- tensors ----------------------------------------------------------------------- */

typedef struct EmTensorObject {
  PyObject_HEAD
  em_tensor *t;      /* one reference, never NULL after construction */
  PyObject *dict;    /* __dict__ (lazily created) */
  PyObject *weakrefs;
} EmTensorObject;

/* ember.Tensor (a heap type: Python code may add attributes to it). */
extern PyTypeObject *emp_tensor_type;

static inline int emp_is_tensor(PyObject *o) {
  return Py_TYPE(o) == emp_tensor_type || PyType_IsSubtype(Py_TYPE(o), emp_tensor_type);
}
/* The em_tensor of a tensor object (borrowed; o must be a tensor). */
static inline em_tensor *emp_tensor(PyObject *o) { return ((EmTensorObject *)o)->t; }

/* Wraps t (steals the reference) into its Python object: the existing one
 * when t already has one, else a new ember.Tensor. t NULL: raises the
 * pending em error (emp_raise) and returns NULL. */
PyObject *emp_wrap(em_tensor *t);
/* Same without stealing (t is retained when a new object is made). */
PyObject *emp_wrap_borrowed(em_tensor *t);
/* A new object of type tp (ember.Tensor or a subclass) owning t (stolen).
 * t must not have a Python object yet. */
PyObject *emp_wrap_as(PyTypeObject *tp, em_tensor *t);

/* ---- errors ---------------------------------------------------------------------- */

/* Raises the Python exception for the thread's last em error (a parked
 * Python exception wins); returns NULL. */
PyObject *emp_raise(void);
/* Same for status-returning calls: returns -1 (st must be non-OK). */
int emp_raise_status(em_status st);
/* Returns NULL after raising st's exception with a formatted message. */
PyObject *emp_raise_fmt(em_status st, const char *fmt, ...);
/* The exception class for a status (borrowed). */
PyObject *emp_exc_class(em_status st);
/* Parks the current Python exception for this thread, sets the em error to
 * match it ("<ExcName>: message", status from the class) and returns that
 * status: call from C callbacks after a Python call failed. */
em_status emp_park_exception(void);
/* Drops a parked exception (if any). */
void emp_clear_parked(void);

/* ---- GIL ------------------------------------------------------------------------- */

#define EMP_NOGIL_NUMEL 65536

static inline int emp_big(const em_tensor *t) { return t && t->numel > EMP_NOGIL_NUMEL; }
/* Two operands: their product bounds a broadcast result. */
static inline int emp_big2(const em_tensor *a, const em_tensor *b) {
  int64_t na = a ? a->numel : 1, nb = b ? b->numel : 1;
  if (na > EMP_NOGIL_NUMEL || nb > EMP_NOGIL_NUMEL) return 1;
  return na * nb > EMP_NOGIL_NUMEL;
}

#define EMP_NOGIL_IF(cond, stmt)        \
  do {                                  \
    if (cond) {                         \
      Py_BEGIN_ALLOW_THREADS stmt;      \
      Py_END_ALLOW_THREADS              \
    } else {                            \
      stmt;                             \
    }                                   \
  } while (0)

#define EMP_NOGIL(stmt) EMP_NOGIL_IF(1, stmt)

/* For callbacks from C: takes the GIL. Returns 0 when the interpreter is
 * gone (then do nothing Python-related and do not call leave). */
int emp_gil_enter(PyGILState_STATE *st);
void emp_gil_leave(PyGILState_STATE st);

/* ---- argument parsing -------------------------------------------------------------- */

/* Parses a vectorcall argument list against names (NULL-terminated; a "*"
 * entry ends the positional parameters). out[i] receives the borrowed
 * object for names[i] (without the "*") or NULL when absent. The first
 * nreq parameters are required. fname names the function in errors
 * ("add() got an unexpected keyword argument 'x'"). Returns 0 or -1. */
int emp_parse(const char *fname, const char *const *names, int nreq, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames, PyObject **out);

/* Converters: 0 on success, -1 with TypeError/ValueError set. fname and
 * arg name the argument in messages. A NULL or None object leaves the
 * output untouched where a default makes sense (noted). */
int emp_arg_tensor(PyObject *o, const char *fname, const char *arg, em_tensor **out); /* borrowed */
/* Tensor, or a Python / NumPy number (wrapped scalar, new reference), or a
 * NumPy array (shared): *out is a new reference. */
int emp_arg_tensor_like(PyObject *o, const char *fname, const char *arg, em_tensor **out);
int emp_arg_int(PyObject *o, const char *fname, const char *arg, int64_t *out);
int emp_arg_dim(PyObject *o, const char *fname, const char *arg, int *out);
int emp_arg_bool(PyObject *o, const char *fname, const char *arg, bool *out);
int emp_arg_double(PyObject *o, const char *fname, const char *arg, double *out);
/* A number (bool, int, float, NumPy scalar, one-element tensor). */
int emp_arg_scalar(PyObject *o, const char *fname, const char *arg, em_scalar *out);
/* None leaves *out; ember.dtype, or Python's float/int/bool. */
int emp_arg_dtype(PyObject *o, const char *fname, const char *arg, em_dtype *out);
/* None leaves *out; "cpu", "cuda:1", ember.device, or an int (cuda index). */
int emp_arg_device(PyObject *o, const char *fname, const char *arg, em_device *out);

typedef struct emp_shape {
  int ndim;
  int64_t d[EM_MAX_DIMS];
} emp_shape;
/* A sequence of ints (tuple, list, ember.Size, 1-D int tensor). */
int emp_arg_shape(PyObject *o, const char *fname, const char *arg, emp_shape *out);
/* Sizes given either as one sequence or as the positional ints themselves
 * (zeros(2, 3) and zeros((2, 3))): args[0..n). */
int emp_arg_shape_varargs(PyObject *const *args, Py_ssize_t n, const char *fname, emp_shape *out);
/* A dim or a sequence of dims; None gives ndim 0 ("all dims"). */
int emp_arg_dims(PyObject *o, const char *fname, const char *arg, emp_shape *out);

/* Python number -> em_scalar: 1 when o is a number, 0 when it is not (no
 * error set), -1 on error (overflow). Tensors are not numbers here. */
int emp_scalar_from(PyObject *o, em_scalar *out);
/* em_scalar -> Python bool / int / float. */
PyObject *emp_scalar_to_py(em_scalar s);

/* Calls method implementation m (self = the first positional argument, or
 * the keyword 'input') as the module-level function fname: ember.add(a, b)
 * runs the same code as a.add(b). A non-tensor input that is a number or
 * an array becomes a tensor first. */
PyObject *emp_call_as_function(emp_fastcall_kw m, const char *fname, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames);
#define EMP_DEF_FUNC(name, m)                                                       \
  static PyObject *f_##name(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, \
                            PyObject *kw) {                                         \
    return emp_call_as_function(m, #name, args, nargs, kw);                         \
  }
#define EMP_KW (METH_FASTCALL | METH_KEYWORDS)

/* ---- dtypes, devices, sizes ---------------------------------------------------------- */

typedef struct EmDtypeObject {
  PyObject_HEAD
  em_dtype dtype;
} EmDtypeObject;
typedef struct EmDeviceObject {
  PyObject_HEAD
  em_device device;
  bool has_index; /* device("cpu") has index None, device("cpu", 0) has 0 */
} EmDeviceObject;

extern PyTypeObject EmDtype_Type;
extern PyTypeObject EmDevice_Type;
extern PyTypeObject EmSize_Type;

/* The ember.float32, ... singleton (borrowed; never NULL for a valid dt). */
PyObject *emp_dtype_obj(em_dtype dt);
/* A new ember.device object. */
PyObject *emp_device_obj(em_device d);
/* A new ember.Size. */
PyObject *emp_size_obj(int ndim, const int64_t *d);
/* A new tuple of ints. */
PyObject *emp_int_tuple(int n, const int64_t *d);

/* ---- generators ------------------------------------------------------------------------ */

typedef struct EmGeneratorObject {
  PyObject_HEAD
  em_generator *g;
  bool owned; /* false for the default generator */
} EmGeneratorObject;
extern PyTypeObject EmGenerator_Type;
/* None leaves *out (NULL: the default generator). */
int emp_arg_generator(PyObject *o, const char *fname, em_generator **out);

/* ---- module assembly -------------------------------------------------------------------
 * Each file contributes module functions and tensor methods/properties;
 * module.c concatenates them. */
extern PyMethodDef emp_create_functions[], emp_ops_functions[], emp_shape_functions[],
    emp_autograd_functions[], emp_interop_functions[], emp_tensor_functions[],
    emp_types_functions[];
extern PyMethodDef emp_ops_methods[], emp_shape_methods[], emp_autograd_methods[],
    emp_interop_methods[], emp_tensor_methods[], emp_create_methods[], emp_index_methods[];
extern PyGetSetDef emp_tensor_getset[], emp_autograd_getset[], emp_interop_getset[];

int emp_errors_init(PyObject *m);
int emp_types_init(PyObject *m);
int emp_tensor_init(PyObject *m);
int emp_ops_init(PyObject *m);
int emp_autograd_init(PyObject *m);
int emp_interop_init(PyObject *m);
int emp_create_init(PyObject *m);
int emp_init_cuda(PyObject *m); /* python/cuda.c */

/* Tensor slots implemented outside tensor.c. */
PyObject *emp_getitem(PyObject *self, PyObject *index);
int emp_setitem(PyObject *self, PyObject *index, PyObject *value);
int emp_getbuffer(PyObject *self, Py_buffer *view, int flags);
void emp_releasebuffer(PyObject *self, Py_buffer *view);
/* Python operators (ops.c). */
extern PyNumberMethods emp_number_methods;
PyObject *emp_richcompare(PyObject *a, PyObject *b, int op);

/* ---- shared helpers ---------------------------------------------------------------------- */

/* Copies the result r into out (out=): same shape: copy; otherwise out takes
 * r's storage and geometry (PyTorch resizes out). Steals r. Returns a new
 * reference to the out object, or NULL. */
PyObject *emp_write_out(PyObject *out, em_tensor *r);
/* Replaces t's data (storage, geometry, dtype) by src's, keeping t's
 * identity and autograd metadata (Tensor.data = src, out= resizing). */
int emp_set_data(em_tensor *t, em_tensor *src);
/* ember.tensor(data, dtype) core: nested sequences / numbers / arrays;
 * new reference. */
em_tensor *emp_tensor_from_data(PyObject *data, em_dtype dt, bool copy_arrays);
/* NumPy array (or any buffer exporter) -> zero-copy tensor; NULL and an
 * exception when o is not a supported buffer. */
em_tensor *emp_tensor_from_buffer(PyObject *o, bool writable_required);
/* True when o looks like a NumPy array (has __array_interface__ or exposes
 * a buffer) — used before trying sequences. */
int emp_is_ndarray(PyObject *o);
/* Grad mode helpers for Python (thread-local in core). */
PyObject *emp_tensor_repr(PyObject *self);
/* Sets requires_grad on a freshly created tensor (creation kwargs). */
int emp_apply_requires_grad(em_tensor *t, PyObject *requires_grad, const char *fname);

#ifdef __cplusplus
}
#endif
#endif
