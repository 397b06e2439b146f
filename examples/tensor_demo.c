/* A tour of ember's tensor library: creation, views, broadcasting,
 * reductions, matmul, and a clear error. */
#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"

#define TRY(x)                                                  \
  do {                                                          \
    if (!(x)) {                                                 \
      fprintf(stderr, "error: %s\n", em_last_error());          \
      return 1;                                                 \
    }                                                           \
  } while (0)

static void show(const char *what, em_tensor *t) {
  char *s = em_tensor_to_string(t, NULL);
  printf("%s =\n%s\n\n", what, s ? s : em_last_error());
  free(s);
}

int main(void) {
  printf("%s\n", em_config_string());
  em_manual_seed(0);
  em_tensor *x = em_tensor_arange(em_scalar_int(0), em_scalar_int(12), em_scalar_int(1), EM_FLOAT32);
  TRY(x);
  em_tensor *m = em_tensor_view(x, EM_DIMS(3, 4));
  TRY(m);
  show("m = arange(12).view(3, 4)", m);
  em_tensor *mt = em_tensor_transpose(m, 0, 1);
  TRY(mt);
  show("m.T", mt);
  em_tensor *p = em_tensor_matmul(m, mt);
  TRY(p);
  show("m @ m.T", p);
  em_tensor *s = em_tensor_softmax(m, 1, EM_DTYPE_UNDEFINED);
  TRY(s);
  show("softmax(m, dim=1)", s);
  em_tensor *bad = em_tensor_matmul(m, m);
  printf("m @ m -> %s\n", bad ? "?" : em_last_error());
  em_tensor_release(bad);
  em_tensor_release(s), em_tensor_release(p), em_tensor_release(mt);
  em_tensor_release(m), em_tensor_release(x);
  return 0;
}
