/* ember._C: module initialisation. Each binding file contributes a table
 * of module functions and an init hook; where two tables define the same
 * name, the first one listed here wins. */
#include <signal.h>
#include <string.h>

#include "python/ember_py.h"

/* nn / optim / data / distributed bindings (python/nn.c, optim.c, data.c,
 * distributed.c). Weak: the module still builds and loads while one of
 * them is absent; each one present is initialised after the core. */
__attribute__((weak)) int emp_init_nn(PyObject *m);
__attribute__((weak)) int emp_init_optim(PyObject *m);
__attribute__((weak)) int emp_init_data(PyObject *m);
__attribute__((weak)) int emp_init_distributed(PyObject *m);

/* Ctrl-C: Python's own SIGINT handler only raises KeyboardInterrupt once
 * control is back in the interpreter, which a backward running with the
 * GIL released delays by its whole length. This handler, installed in
 * front of Python's, also asks ember to stop a running backward between
 * nodes (em_request_interrupt; it fails with EM_ERR_INTERRUPTED ->
 * KeyboardInterrupt), then calls Python's handler. A Python-level
 * signal.signal(SIGINT, ...) later replaces both: then a backward runs to
 * completion as before. */
static struct sigaction prev_sigint;

static void on_sigint(int sig, siginfo_t *info, void *uctx) {
  em_request_interrupt();
  if (prev_sigint.sa_flags & SA_SIGINFO) {
    if (prev_sigint.sa_sigaction) prev_sigint.sa_sigaction(sig, info, uctx);
  } else if (prev_sigint.sa_handler != SIG_IGN && prev_sigint.sa_handler != SIG_DFL) {
    prev_sigint.sa_handler(sig);
  } else if (prev_sigint.sa_handler == SIG_DFL) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

static void install_sigint(void) {
  struct sigaction cur;
  if (sigaction(SIGINT, NULL, &cur) != 0) return;
  if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) return; /* ignored: keep it so */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigint;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, &prev_sigint) != 0) return;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ember._C",
    .m_doc = "ember's C core: tensors, ops, autograd.",
    .m_size = -1,
};

static int add_functions(PyObject *m, PyMethodDef *defs) {
  PyObject *d = PyModule_GetDict(m), *name = PyModule_GetNameObject(m);
  if (!name) return -1;
  for (PyMethodDef *f = defs; f->ml_name; f++) {
    if (PyDict_GetItemString(d, f->ml_name)) continue;
    PyObject *fn = PyCFunction_NewEx(f, m, name);
    if (!fn || PyDict_SetItemString(d, f->ml_name, fn) < 0) {
      Py_XDECREF(fn);
      Py_DECREF(name);
      return -1;
    }
    Py_DECREF(fn);
  }
  Py_DECREF(name);
  return 0;
}

PyMODINIT_FUNC PyInit__C(void) {
  PyObject *m = PyModule_Create(&module_def);
  if (!m) return NULL;
  PyMethodDef *tables[] = {emp_types_functions,  emp_create_functions,  emp_ops_functions,
                           emp_shape_functions,  emp_autograd_functions, emp_interop_functions,
                           emp_tensor_functions};
  if (emp_errors_init(m) < 0 || emp_types_init(m) < 0 || emp_ops_init(m) < 0 ||
      emp_autograd_init(m) < 0 || emp_interop_init(m) < 0 || emp_create_init(m) < 0 ||
      emp_tensor_init(m) < 0 || emp_init_cuda(m) < 0)
    goto fail;
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
    if (add_functions(m, tables[i]) < 0) goto fail;
  if (PyModule_AddStringConstant(m, "__version__", em_version()) < 0) goto fail;
  install_sigint();
  int (*const extras[])(PyObject *) = {emp_init_nn, emp_init_optim, emp_init_data,
                                       emp_init_distributed};
  for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++)
    if (extras[i] && extras[i](m) < 0) goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}
