/* em_status -> Python exceptions, and Python exceptions raised inside C
 * callbacks carried back through C ("parking").
 *
 * The exception class of each status comes from EM_STATUS_MAP
 * (core/status.h) and is looked up once in builtins. A callback (tensor
 * hook, Function.forward/backward) that raises parks the exception in a
 * thread-local slot and hands C an em error whose message it remembers; when
 * the C call fails with that same message on the same thread, emp_raise
 * restores the original exception (type, value, traceback) instead of a
 * mapped copy. A stale slot (C swallowed the error) is dropped. */
#include "python/ember_py.h"

static PyObject *exc_table[EM_STATUS_COUNT];

static _Thread_local PyObject *parked_type, *parked_value, *parked_tb;
static _Thread_local char parked_msg[256];

int emp_errors_init(PyObject *m) {
  PyObject *builtins = PyEval_GetBuiltins(); /* borrowed */
  static const char *const names[EM_STATUS_COUNT] = {
      [EM_OK] = "RuntimeError",
#define X(name, desc, pyexc) [EM_ERR_##name] = pyexc,
      EM_STATUS_MAP(X)
#undef X
  };
  for (int i = 0; i < EM_STATUS_COUNT; i++) {
    PyObject *c = builtins ? PyDict_GetItemString(builtins, names[i]) : NULL;
    if (!c) c = PyExc_RuntimeError;
    Py_INCREF(c);
    exc_table[i] = c;
  }
  return 0;
}

PyObject *emp_exc_class(em_status st) {
  if ((int)st <= 0 || st >= EM_STATUS_COUNT) return PyExc_RuntimeError;
  return exc_table[st];
}

void emp_clear_parked(void) {
  Py_CLEAR(parked_type);
  Py_CLEAR(parked_value);
  Py_CLEAR(parked_tb);
  parked_msg[0] = '\0';
}

static em_status status_of_exception(PyObject *type) {
  static const struct {
    PyObject **exc;
    em_status st;
  } map[] = {
      {&PyExc_KeyboardInterrupt, EM_ERR_INTERRUPTED}, {&PyExc_TimeoutError, EM_ERR_TIMEOUT},
      {&PyExc_MemoryError, EM_ERR_NOMEM},             {&PyExc_NotImplementedError, EM_ERR_NOTIMPL},
      {&PyExc_IndexError, EM_ERR_INDEX},              {&PyExc_TypeError, EM_ERR_DTYPE},
      {&PyExc_ValueError, EM_ERR_INVALID},            {&PyExc_OSError, EM_ERR_IO},
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (PyErr_GivenExceptionMatches(type, *map[i].exc)) return map[i].st;
  return EM_ERR_INTERNAL;
}

em_status emp_park_exception(void) {
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  if (!t) return em_set_error(EM_ERR_INTERNAL, "a Python callback failed without an exception");
  PyErr_NormalizeException(&t, &v, &tb);
  if (tb && v) PyException_SetTraceback(v, tb);
  em_status st = status_of_exception(t);
  const char *tname = ((PyTypeObject *)t)->tp_name;
  PyObject *s = v ? PyObject_Str(v) : NULL;
  const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
  if (!msg) PyErr_Clear();
  em_set_error(st, "%s: %s", tname, msg ? msg : "<exception str() failed>");
  Py_XDECREF(s);
  emp_clear_parked();
  parked_type = t;
  parked_value = v;
  parked_tb = tb;
  snprintf(parked_msg, sizeof parked_msg, "%s", em_last_error());
  return st;
}

static int restore_parked(void) {
  if (!parked_type) return 0;
  /* em errors get context prefixed on the way up ("backward: ..."): the
   * parked message must still be in there */
  int match = strstr(em_last_error(), parked_msg) != NULL;
  if (!match) {
    emp_clear_parked();
    return 0;
  }
  PyErr_Restore(parked_type, parked_value, parked_tb);
  parked_type = parked_value = parked_tb = NULL;
  parked_msg[0] = '\0';
  return 1;
}

/* Sets the exception of status st. Interrupted by Ctrl-C: Python's own
 * handler has a signal pending too; running it now raises the one
 * KeyboardInterrupt (or does what a user handler does) instead of a second
 * one at the next bytecode. */
static void set_status_error(em_status st, const char *msg) {
  if (st == EM_ERR_INTERRUPTED && PyErr_CheckSignals() < 0) return;
  PyErr_SetString(emp_exc_class(st), msg[0] ? msg : em_status_name(st));
}

PyObject *emp_raise(void) {
  if (PyErr_Occurred()) return NULL; /* a converter already raised */
  if (restore_parked()) return NULL;
  em_status st = em_last_status();
  const char *msg = em_last_error();
  if (st == EM_OK) {
    PyErr_SetString(PyExc_RuntimeError, msg[0] ? msg : "ember: operation failed");
    return NULL;
  }
  set_status_error(st, msg);
  return NULL;
}

int emp_raise_status(em_status st) {
  if (PyErr_Occurred()) return -1;
  if (restore_parked()) return -1;
  set_status_error(st, em_last_error());
  return -1;
}

PyObject *emp_raise_fmt(em_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  PyObject *s = PyUnicode_FromFormatV(fmt, ap);
  va_end(ap);
  if (s) {
    PyErr_SetObject(emp_exc_class(st), s);
    Py_DECREF(s);
  }
  return NULL;
}

/* ---- GIL for callbacks ------------------------------------------------------------- */

int emp_gil_enter(PyGILState_STATE *st) {
  if (_Py_IsFinalizing()) return 0;
  *st = PyGILState_Ensure();
  return 1;
}

void emp_gil_leave(PyGILState_STATE st) { PyGILState_Release(st); }
