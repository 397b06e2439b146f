/* Gradient clipping: torch.nn.utils.clip_grad_norm_ and clip_grad_value_.
 * Parameters without a gradient are skipped. The total norm is
 * accumulated in double from each gradient's norm (PyTorch stacks the
 * per-gradient norms in the gradients' dtype), so it may differ from
 * PyTorch's float32 total in the last bits. */
#include <math.h>

#include "core/core_impl.h"
#include "nn/nn.h"

em_status em_nn_clip_grad_norm_(int n, em_tensor *const *params, double max_norm,
                                double norm_type, bool error_if_nonfinite, double *total_norm) {
  if (total_norm) *total_norm = 0;
  if (n < 0 || (n > 0 && !params))
    return em__set_error(EM_ERR_INVALID, "clip_grad_norm_: invalid parameter list (n = %d)", n);
  if (!(norm_type > 0))
    return em__set_error(EM_ERR_INVALID,
                         "clip_grad_norm_: norm_type must be positive or inf, got %g", norm_type);
  if (isnan(max_norm)) return em__set_error(EM_ERR_INVALID, "clip_grad_norm_: max_norm is NaN");
  bool is_inf = isinf(norm_type);
  bool prev = em_set_grad_enabled(false);
  em_status st = EM_OK;
  double total = 0;
  int ngrads = 0;
  for (int i = 0; i < n && !st; i++) {
    if (!params[i]) {
      st = em__set_error(EM_ERR_INVALID, "clip_grad_norm_: parameter %d is NULL", i);
      break;
    }
    em_tensor *g = em_tensor_grad(params[i]);
    if (!g) continue;
    ngrads++;
    em_tensor *nt = em_tensor_norm(g, norm_type, 0, NULL, false);
    if (!nt) {
      st = em_last_status();
    } else {
      double v = em_tensor_item_double(nt);
      if (is_inf)
        total = (v > total || isnan(v)) ? v : total;
      else
        total += norm_type == 1 ? v : norm_type == 2 ? v * v : pow(v, norm_type);
    }
    em_tensor_release(nt), em_tensor_release(g);
  }
  if (st) goto done;
  if (!is_inf) total = norm_type == 1 ? total : norm_type == 2 ? sqrt(total) : pow(total, 1 / norm_type);
  if (total_norm) *total_norm = total;
  if (ngrads == 0) goto done;
  if (error_if_nonfinite && !isfinite(total)) {
    st = em__set_error(EM_ERR_INVALID,
                       "clip_grad_norm_: The total norm of order %g for gradients from `parameters` "
                       "is non-finite, so it cannot be clipped. To disable this error and scale the "
                       "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`",
                       norm_type);
    goto done;
  }
  double coef = max_norm / (total + 1e-6);
  if (coef > 1) coef = 1; /* NaN stays NaN, as torch.clamp */
  if (coef == 1) goto done; /* multiplying by 1 changes nothing */
  em_tensor *c = em_tensor_wrapped_scalar(em_scalar_float(coef));
  if (!c) {
    st = em_last_status();
    goto done;
  }
  for (int i = 0; i < n && !st; i++) {
    em_tensor *g = em_tensor_grad(params[i]);
    if (g) st = em_tensor_mul_(g, c);
    em_tensor_release(g);
  }
  em_tensor_release(c);
done:
  em_set_grad_enabled(prev);
  return st;
}

em_status em_nn_clip_grad_value_(int n, em_tensor *const *params, double clip_value) {
  if (n < 0 || (n > 0 && !params))
    return em__set_error(EM_ERR_INVALID, "clip_grad_value_: invalid parameter list (n = %d)", n);
  if (isnan(clip_value)) return em__set_error(EM_ERR_INVALID, "clip_grad_value_: clip_value is NaN");
  bool prev = em_set_grad_enabled(false);
  em_status st = EM_OK;
  for (int i = 0; i < n && !st; i++) {
    if (!params[i]) {
      st = em__set_error(EM_ERR_INVALID, "clip_grad_value_: parameter %d is NULL", i);
      break;
    }
    em_tensor *g = em_tensor_grad(params[i]);
    if (g) st = em_tensor_clamp_(g, true, -clip_value, true, clip_value);
    em_tensor_release(g);
  }
  em_set_grad_enabled(prev);
  return st;
}
