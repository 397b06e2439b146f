/* ember nn.init — parameter initialisation, in place, without autograd.
 * g NULL means the default generator. Fans follow PyTorch's
 * _calculate_fan_in_and_fan_out (dim 1 is fan_in per receptive field,
 * dim 0 fan_out); tensors with fewer than 2 dims are an error where PyTorch
 * errors. */
#ifndef EMBER_NN_INIT_H
#define EMBER_NN_INIT_H

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum em_fan_mode { EM_FAN_IN = 0, EM_FAN_OUT } em_fan_mode;

/* nonlinearity: "linear", "conv2d", "sigmoid", "tanh", "relu",
 * "leaky_relu" (param = negative slope), "selu". Returns NaN and an error
 * for an unknown name. */
EM_API double em_nn_init_calculate_gain(const char *nonlinearity, double param);
EM_API em_status em_nn_init_fans(em_tensor *t, int64_t *fan_in, int64_t *fan_out);

EM_API em_status em_nn_init_uniform_(em_tensor *t, double a, double b, em_generator *g);
EM_API em_status em_nn_init_normal_(em_tensor *t, double mean, double std, em_generator *g);
EM_API em_status em_nn_init_constant_(em_tensor *t, double value);
EM_API em_status em_nn_init_zeros_(em_tensor *t);
EM_API em_status em_nn_init_ones_(em_tensor *t);
EM_API em_status em_nn_init_xavier_uniform_(em_tensor *t, double gain, em_generator *g);
EM_API em_status em_nn_init_xavier_normal_(em_tensor *t, double gain, em_generator *g);
EM_API em_status em_nn_init_kaiming_uniform_(em_tensor *t, double a, em_fan_mode mode,
                                             const char *nonlinearity, em_generator *g);
EM_API em_status em_nn_init_kaiming_normal_(em_tensor *t, double a, em_fan_mode mode,
                                            const char *nonlinearity, em_generator *g);
/* A (semi-)orthogonal matrix from the QR decomposition of a normal matrix,
 * as PyTorch; t with >= 2 dims is flattened to [dim0, rest]. */
EM_API em_status em_nn_init_orthogonal_(em_tensor *t, double gain, em_generator *g);

#ifdef __cplusplus
}
#endif
#endif
