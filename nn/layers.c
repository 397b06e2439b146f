/* Basic layers: Linear, Bilinear, Identity, Flatten, Embedding, Dropout,
 * the activation modules, and the containers Sequential, ModuleList,
 * ModuleDict. Convolution, pooling and normalisation are in conv.c,
 * pool.c and norm.c. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core_impl.h"
#include "nn/nn.h"
#include "nn/nn_impl.h"

static em_status want_inputs(em_module *m, int nin, int want) {
  if (nin != want)
    return em__set_error(EM_ERR_INVALID, "%s.forward: takes %d input%s, got %d",
                         em_module_type_name(m), want, want == 1 ? "" : "s", nin);
  return EM_OK;
}

/* uniform(-bound, bound), PyTorch's default for Linear/Bilinear/Conv. */
static em_tensor *uniform_param(int ndim, const int64_t *shape, double bound) {
  em_tensor *t = em_tensor_empty(ndim, shape, EM_DTYPE_UNDEFINED);
  if (t && em_tensor_uniform_(t, -bound, bound, NULL)) {
    em_tensor_release(t);
    return NULL;
  }
  return t;
}

/* Registers t (stealing the reference) as parameter name. */
static em_status add_param(em_module *m, const char *name, em_tensor *t) {
  if (!t) return em_last_status();
  em_status st = em_module_register_parameter(m, name, t);
  em_tensor_release(t);
  return st;
}

static em_module *finish(em_module *m, em_status st) {
  if (st) {
    em_module_release(m);
    return NULL;
  }
  return m;
}

/* ---- linear -------------------------------------------------------------------- */

em_tensor *em_nn_f_linear(em_tensor *x, em_tensor *w, em_tensor *b) {
  if (!x || !w) return EM_FAIL(EM_ERR_INVALID, "linear: NULL input or weight");
  if (w->ndim != 2) return EM_FAIL(EM_ERR_SHAPE, "linear: weight must be 2-D, got %s", em__tshape(w));
  if (x->ndim == 0) return EM_FAIL(EM_ERR_SHAPE, "linear: input must have at least 1 dim");
  if (x->shape[x->ndim - 1] != w->shape[1])
    return EM_FAIL(EM_ERR_SHAPE,
                   "linear: mat1 and mat2 shapes cannot be multiplied (input %s, weight %s: "
                   "%lld != %lld)",
                   em__tshape(x), em__tshape(w), (long long)x->shape[x->ndim - 1],
                   (long long)w->shape[1]);
  if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
    return EM_FAIL(EM_ERR_SHAPE, "linear: bias must have shape [%lld], got %s",
                   (long long)w->shape[0], em__tshape(b));
  em_tensor *wt = em_tensor_t(w);
  if (!wt) return NULL;
  em_tensor *y;
  if (x->ndim == 2 && b) {
    y = em_tensor_addmm(b, x, wt, 1, 1);
  } else {
    y = em_tensor_matmul(x, wt);
    if (y && b) {
      em_tensor *z = em_tensor_add(y, b);
      em_tensor_release(y);
      y = z;
    }
  }
  em_tensor_release(wt);
  return y;
}

typedef struct linear_impl {
  int64_t in, out;
  bool bias;
} linear_impl;

static em_tensor *linear_forward(em_module *m, int nin, em_tensor *const *in) {
  if (want_inputs(m, nin, 1)) return NULL;
  return em_nn_f_linear(in[0], em_module_parameter(m, "weight"), em_module_parameter(m, "bias"));
}
static char *linear_repr(em_module *m) {
  linear_impl *p = em_module_impl(m);
  return em__nn_fmt("in_features=%lld, out_features=%lld, bias=%s", (long long)p->in,
                    (long long)p->out, p->bias ? "True" : "False");
}
static const em_module_ops linear_ops = {"Linear", linear_forward, linear_repr, free};

em_module *em_nn_linear(int64_t in_features, int64_t out_features, bool bias) {
  if (in_features < 0 || out_features < 0)
    return EM_FAIL(EM_ERR_INVALID, "Linear: in_features (%lld) and out_features (%lld) must be >= 0",
                   (long long)in_features, (long long)out_features);
  linear_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "Linear: out of memory");
  *p = (linear_impl){in_features, out_features, bias};
  em_module *m = em_module_create(&linear_ops, p);
  if (!m) return NULL;
  /* kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in); the bias too */
  double bound = in_features > 0 ? 1.0 / sqrt((double)in_features) : 0;
  em_status st = add_param(m, "weight", uniform_param(EM_DIMS(out_features, in_features), bound));
  if (!st) st = bias ? add_param(m, "bias", uniform_param(EM_DIMS(out_features), bound))
                     : em_module_register_parameter(m, "bias", NULL);
  return finish(m, st);
}

/* ---- bilinear -------------------------------------------------------------------- */

/* y[n, k] = sum_ij x1[n, i] w[k, i, j] x2[n, j] + b[k], as
 * (x1 @ w'[i, (k j)]) viewed [n, k, j] times x2[n, 1, j], summed over j. */
em_tensor *em_nn_f_bilinear(em_tensor *x1, em_tensor *x2, em_tensor *w, em_tensor *b) {
  if (!x1 || !x2 || !w) return EM_FAIL(EM_ERR_INVALID, "bilinear: NULL input or weight");
  if (w->ndim != 3) return EM_FAIL(EM_ERR_SHAPE, "bilinear: weight must be 3-D, got %s", em__tshape(w));
  if (x1->ndim < 1 || x2->ndim != x1->ndim)
    return EM_FAIL(EM_ERR_SHAPE, "bilinear: input1 %s and input2 %s must have the same number of dims",
                   em__tshape(x1), em__tshape(x2));
  for (int d = 0; d < x1->ndim - 1; d++)
    if (x1->shape[d] != x2->shape[d])
      return EM_FAIL(EM_ERR_SHAPE, "bilinear: input1 %s and input2 %s must have the same batch sizes",
                     em__tshape(x1), em__tshape(x2));
  int64_t k = w->shape[0], i1 = w->shape[1], i2 = w->shape[2];
  if (x1->shape[x1->ndim - 1] != i1 || x2->shape[x2->ndim - 1] != i2)
    return EM_FAIL(EM_ERR_SHAPE, "bilinear: input sizes %s and %s do not match weight %s",
                   em__tshape(x1), em__tshape(x2), em__tshape(w));
  if (b && (b->ndim != 1 || b->shape[0] != k))
    return EM_FAIL(EM_ERR_SHAPE, "bilinear: bias must have shape [%lld], got %s", (long long)k,
                   em__tshape(b));
  em_tensor *a = NULL, *wp = NULL, *wr = NULL, *t = NULL, *tv = NULL, *x2u = NULL, *p = NULL,
            *s = NULL, *y = NULL, *a2 = NULL;
  int64_t n = x1->numel / i1;
  a = em_tensor_reshape(x1, EM_DIMS(n, i1));
  a2 = a ? em_tensor_reshape(x2, EM_DIMS(n, 1, i2)) : NULL;
  wp = a2 ? em_tensor_permute(w, EM_DIMS(1, 0, 2)) : NULL;
  wr = wp ? em_tensor_reshape(wp, EM_DIMS(i1, k * i2)) : NULL;
  t = wr ? em_tensor_mm(a, wr) : NULL;
  tv = t ? em_tensor_view(t, EM_DIMS(n, k, i2)) : NULL;
  p = tv ? em_tensor_mul(tv, a2) : NULL;
  s = p ? em_tensor_sum(p, EM_DIMS(2), false, EM_DTYPE_UNDEFINED) : NULL;
  if (s && b) {
    y = em_tensor_add(s, b);
  } else if (s) {
    y = em_tensor_retain(s);
  }
  em_tensor *out = NULL;
  if (y) {
    int64_t shape[EM_MAX_DIMS];
    memcpy(shape, x1->shape, sizeof(int64_t) * (size_t)x1->ndim);
    shape[x1->ndim - 1] = k;
    out = em_tensor_reshape(y, x1->ndim, shape);
  }
  em_tensor *all[] = {a, wp, wr, t, tv, x2u, p, s, y, a2};
  for (size_t q = 0; q < sizeof all / sizeof all[0]; q++) em_tensor_release(all[q]);
  return out;
}

typedef struct bilinear_impl {
  int64_t in1, in2, out;
  bool bias;
} bilinear_impl;

static em_tensor *bilinear_forward(em_module *m, int nin, em_tensor *const *in) {
  if (want_inputs(m, nin, 2)) return NULL;
  return em_nn_f_bilinear(in[0], in[1], em_module_parameter(m, "weight"),
                          em_module_parameter(m, "bias"));
}
static char *bilinear_repr(em_module *m) {
  bilinear_impl *p = em_module_impl(m);
  return em__nn_fmt("in1_features=%lld, in2_features=%lld, out_features=%lld, bias=%s",
             (long long)p->in1, (long long)p->in2, (long long)p->out, p->bias ? "True" : "False");
}
static const em_module_ops bilinear_ops = {"Bilinear", bilinear_forward, bilinear_repr, free};

em_module *em_nn_bilinear(int64_t in1, int64_t in2, int64_t out, bool bias) {
  if (in1 < 0 || in2 < 0 || out < 0) return EM_FAIL(EM_ERR_INVALID, "Bilinear: sizes must be >= 0");
  bilinear_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "Bilinear: out of memory");
  *p = (bilinear_impl){in1, in2, out, bias};
  em_module *m = em_module_create(&bilinear_ops, p);
  if (!m) return NULL;
  double bound = in1 > 0 ? 1.0 / sqrt((double)in1) : 0; /* PyTorch: 1/sqrt(weight.size(1)) */
  em_status st = add_param(m, "weight", uniform_param(EM_DIMS(out, in1, in2), bound));
  if (!st) st = bias ? add_param(m, "bias", uniform_param(EM_DIMS(out), bound))
                     : em_module_register_parameter(m, "bias", NULL);
  return finish(m, st);
}

/* ---- identity and flatten ---------------------------------------------------------- */

static em_tensor *identity_forward(em_module *m, int nin, em_tensor *const *in) {
  if (nin < 1) return EM_FAIL(EM_ERR_INVALID, "Identity.forward: needs an input");
  return em_tensor_retain(in[0]);
}
static const em_module_ops identity_ops = {"Identity", identity_forward, NULL, NULL};
em_module *em_nn_identity(void) { return em_module_create(&identity_ops, NULL); }

typedef struct flatten_impl {
  int start, end;
} flatten_impl;
static em_tensor *flatten_forward(em_module *m, int nin, em_tensor *const *in) {
  if (want_inputs(m, nin, 1)) return NULL;
  flatten_impl *p = em_module_impl(m);
  return em_tensor_flatten(in[0], p->start, p->end);
}
static char *flatten_repr(em_module *m) {
  flatten_impl *p = em_module_impl(m);
  return em__nn_fmt("start_dim=%d, end_dim=%d", p->start, p->end);
}
static const em_module_ops flatten_ops = {"Flatten", flatten_forward, flatten_repr, free};
em_module *em_nn_flatten(int start_dim, int end_dim) {
  flatten_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "Flatten: out of memory");
  *p = (flatten_impl){start_dim, end_dim};
  return em_module_create(&flatten_ops, p);
}

/* ---- embedding ----------------------------------------------------------------------- */

/* With a padding index the padding row must get no gradient, so the
 * lookup is a custom function: backward accumulates rows (index_add) and
 * zeroes the padding row. */
/* ctx user: int64_t[2] = {padding index (wrapped), number of rows}. */
static em_status embed_fwd(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout,
                           em_tensor **out) {
  out[0] = em_tensor_embedding(in[1], in[0]);
  if (!out[0]) return em_last_status();
  *nout = 1;
  return em_ag_ctx_save(ctx, 1, in); /* the indices */
}

static em_status embed_bwd(em_ag_ctx *ctx, int nout, em_tensor *const *go, int nin,
                           em_tensor **gi) {
  if (!go[0] || !em_ag_ctx_needs_input_grad(ctx, 1)) return EM_OK;
  const int64_t *u = em_ag_ctx_user(ctx);
  em_tensor *idx = em_ag_ctx_saved(ctx, 0);
  if (!idx) return em_last_status();
  em_tensor *g = go[0];
  int64_t dim = g->shape[g->ndim - 1];
  em_tensor *flat_idx = em_tensor_reshape(idx, EM_DIMS(-1));
  em_tensor *flat_g = flat_idx ? em_tensor_reshape(g, EM_DIMS(-1, dim)) : NULL;
  em_tensor *w = NULL, *row = NULL;
  em_status st = EM_OK;
  if (!flat_g) goto fail;
  w = em_tensor_zeros(EM_DIMS(u[1], dim), (em_dtype)g->dtype);
  if (!w) goto fail;
  EM_CHECK_GOTO(em_tensor_index_add_(w, 0, flat_idx, flat_g, em_scalar_int(1)), st, out);
  row = em_tensor_select(w, 0, u[0]);
  if (!row) goto fail;
  EM_CHECK_GOTO(em_tensor_zero_(row), st, out);
  gi[1] = em_tensor_retain(w);
  goto out;
fail:
  st = em_last_status();
out:
  em_tensor_release(row), em_tensor_release(w);
  em_tensor_release(flat_g), em_tensor_release(flat_idx);
  return st;
}

static const em_ag_function embedding_fn = {"EmbeddingBackward0", embed_fwd, embed_bwd};

em_tensor *em_nn_f_embedding(em_tensor *indices, em_tensor *weight, bool has_padding_idx,
                             int64_t padding_idx) {
  if (!indices || !weight) return EM_FAIL(EM_ERR_INVALID, "embedding: NULL indices or weight");
  if (weight->ndim != 2)
    return EM_FAIL(EM_ERR_SHAPE, "embedding: 'weight' must be 2-D, got %s", em__tshape(weight));
  if (!has_padding_idx) return em_tensor_embedding(weight, indices);
  int64_t num = weight->shape[0];
  if (padding_idx < -num || padding_idx >= num)
    return EM_FAIL(EM_ERR_INDEX, "embedding: padding_idx %lld must be within num_embeddings (%lld)",
                   (long long)padding_idx, (long long)num);
  int64_t *u = malloc(2 * sizeof *u);
  if (!u) return EM_FAIL(EM_ERR_NOMEM, "embedding: out of memory");
  u[0] = padding_idx < 0 ? padding_idx + num : padding_idx;
  u[1] = num;
  em_tensor *in[2] = {indices, weight}, *out[EM_AG_MAX_OUTPUTS];
  int nout;
  if (em_ag_function_apply(&embedding_fn, u, free, 2, in, &nout, out)) return NULL;
  return out[0];
}

typedef struct embedding_impl {
  int64_t num, dim;
  bool has_pad;
  int64_t pad;
} embedding_impl;

static em_tensor *embedding_forward(em_module *m, int nin, em_tensor *const *in) {
  if (want_inputs(m, nin, 1)) return NULL;
  embedding_impl *p = em_module_impl(m);
  return em_nn_f_embedding(in[0], em_module_parameter(m, "weight"), p->has_pad, p->pad);
}
static char *embedding_repr(em_module *m) {
  embedding_impl *p = em_module_impl(m);
  if (p->has_pad)
    return em__nn_fmt("%lld, %lld, padding_idx=%lld", (long long)p->num, (long long)p->dim,
                      (long long)p->pad);
  return em__nn_fmt("%lld, %lld", (long long)p->num, (long long)p->dim);
}
static const em_module_ops embedding_ops = {"Embedding", embedding_forward, embedding_repr, free};

em_module *em_nn_embedding(int64_t num, int64_t dim, bool has_padding_idx, int64_t padding_idx) {
  if (num < 0 || dim < 0) return EM_FAIL(EM_ERR_INVALID, "Embedding: sizes must be >= 0");
  if (has_padding_idx && (padding_idx < -num || padding_idx >= num))
    return EM_FAIL(EM_ERR_INDEX, "Embedding: padding_idx must be within num_embeddings");
  embedding_impl *p = malloc(sizeof *p);
  if (!p) return EM_FAIL(EM_ERR_NOMEM, "Embedding: out of memory");
  *p = (embedding_impl){num, dim, has_padding_idx, padding_idx < 0 ? padding_idx + num : padding_idx};
  em_module *m = em_module_create(&embedding_ops, p);
  if (!m) return NULL;
  em_tensor *w = em_tensor_randn(EM_DIMS(num, dim), EM_DTYPE_UNDEFINED, NULL); /* normal_(0, 1) */
  em_status st = w ? EM_OK : em_last_status();
  if (!st && has_padding_idx) {
    em_tensor *row = em_tensor_select(w, 0, p->pad);
    st = row ? em_tensor_zero_(row) : em_last_status();
    em_tensor_release(row);
  }
  if (st) {
    em_tensor_release(w);
    return finish(m, st);
  }
  return finish(m, add_param(m, "weight", w));
}

/* ---- dropout -------------------------------------------------------------------------- */

em_tensor *em_nn_f_dropout(em_tensor *x, double p, bool training, em_generator *g) {
  if (!x) return EM_FAIL(EM_ERR_INVALID, "dropout: NULL input");
  if (!(p >= 0 && p <= 1))
    return EM_FAIL(EM_ERR_INVALID, "dropout probability has to be between 0 and 1, but got %g", p);
  if (!training || p == 0) return em_tensor_retain(x);
  if (!em_dtype_is_float((em_dtype)x->dtype))
    return EM_FAIL(EM_ERR_DTYPE, "dropout: expected a floating-point input, got %s",
                   em_dtype_name((em_dtype)x->dtype));
  if (p == 1) return em_tensor_mul_scalar(x, em_scalar_float(0));
  em_tensor *mask = em_tensor_empty_like(x, EM_DTYPE_UNDEFINED);
  if (!mask) return NULL;
  em_tensor *y = NULL;
  if (!em_tensor_bernoulli_(mask, 1 - p, g)) {
    em_tensor *scaled = em_tensor_mul_scalar(mask, em_scalar_float(1.0 / (1 - p)));
    if (scaled) y = em_tensor_mul(x, scaled);
    em_tensor_release(scaled);
  }
  em_tensor_release(mask);
  return y;
}

typedef struct dropout_impl {
  double p;
} dropout_impl;
static em_tensor *dropout_forward(em_module *m, int nin, em_tensor *const *in) {
  if (want_inputs(m, nin, 1)) return NULL;
  dropout_impl *p = em_module_impl(m);
  return em_nn_f_dropout(in[0], p->p, em_module_is_training(m), NULL);
}
static char *dropout_repr(em_module *m) {
  dropout_impl *p = em_module_impl(m);
  return em__nn_fmt("p=%g, inplace=False", p->p);
}
static const em_module_ops dropout_ops = {"Dropout", dropout_forward, dropout_repr, free};
em_module *em_nn_dropout(double p) {
  if (!(p >= 0 && p <= 1))
    return EM_FAIL(EM_ERR_INVALID, "dropout probability has to be between 0 and 1, but got %g", p);
  dropout_impl *d = malloc(sizeof *d);
  if (!d) return EM_FAIL(EM_ERR_NOMEM, "Dropout: out of memory");
  d->p = p;
  return em_module_create(&dropout_ops, d);
}

/* ---- activations ------------------------------------------------------------------------ */

typedef struct act_impl {
  double f;
  int i;
} act_impl;

#define ACT(NAME, TYPE, EXPR, REPR)                                                  \
  static em_tensor *NAME##_forward(em_module *m, int nin, em_tensor *const *in) {   \
    if (want_inputs(m, nin, 1)) return NULL;                                         \
    act_impl *a = em_module_impl(m);                                                 \
    (void)a;                                                                         \
    em_tensor *x = in[0];                                                            \
    return EXPR;                                                                     \
  }                                                                                  \
  static char *NAME##_repr(em_module *m) {                                           \
    act_impl *a = em_module_impl(m);                                                 \
    (void)a;                                                                         \
    return REPR;                                                                     \
  }                                                                                  \
  static const em_module_ops NAME##_ops = {TYPE, NAME##_forward, NAME##_repr, free};

ACT(relu, "ReLU", em_tensor_relu(x), NULL)
ACT(leaky, "LeakyReLU", em_tensor_leaky_relu(x, a->f), em__nn_fmt("negative_slope=%g", a->f))
ACT(gelu, "GELU", em_tensor_gelu(x, a->i), em__nn_fmt("approximate='%s'", a->i ? "tanh" : "none"))
ACT(silu, "SiLU", em_tensor_silu(x), NULL)
ACT(tanh, "Tanh", em_tensor_tanh(x), NULL)
ACT(sigmoid, "Sigmoid", em_tensor_sigmoid(x), NULL)
ACT(softmax, "Softmax", em_tensor_softmax(x, a->i, EM_DTYPE_UNDEFINED), em__nn_fmt("dim=%d", a->i))
ACT(log_softmax, "LogSoftmax", em_tensor_log_softmax(x, a->i, EM_DTYPE_UNDEFINED),
    em__nn_fmt("dim=%d", a->i))

static em_module *act(const em_module_ops *ops, double f, int i) {
  act_impl *a = malloc(sizeof *a);
  if (!a) return EM_FAIL(EM_ERR_NOMEM, "%s: out of memory", ops->type_name);
  *a = (act_impl){f, i};
  return em_module_create(ops, a);
}

em_module *em_nn_relu(void) { return act(&relu_ops, 0, 0); }
em_module *em_nn_leaky_relu(double slope) { return act(&leaky_ops, slope, 0); }
em_module *em_nn_gelu(bool approximate_tanh) { return act(&gelu_ops, 0, approximate_tanh); }
em_module *em_nn_silu(void) { return act(&silu_ops, 0, 0); }
em_module *em_nn_tanh(void) { return act(&tanh_ops, 0, 0); }
em_module *em_nn_sigmoid(void) { return act(&sigmoid_ops, 0, 0); }
em_module *em_nn_softmax(int dim) { return act(&softmax_ops, 0, dim); }
em_module *em_nn_log_softmax(int dim) { return act(&log_softmax_ops, 0, dim); }

/* ---- containers ------------------------------------------------------------------------------ */

static em_tensor *sequential_forward(em_module *m, int nin, em_tensor *const *in) {
  if (nin < 1) return EM_FAIL(EM_ERR_INVALID, "Sequential.forward: needs an input");
  em_tensor *x = em_module_num_children(m) ? em_module_forward_n(em_module_child_at(m, 0), nin, in)
                                           : em_tensor_retain(in[0]);
  for (int i = 1; x && i < em_module_num_children(m); i++) {
    em_tensor *y = em_module_forward(em_module_child_at(m, i), x);
    if (!y) em__prefix_error("Sequential layer %d (%s)", i, em_module_type_name(em_module_child_at(m, i)));
    em_tensor_release(x);
    x = y;
  }
  return x;
}
static const em_module_ops sequential_ops = {"Sequential", sequential_forward, NULL, NULL};
static const em_module_ops module_list_ops = {"ModuleList", NULL, NULL, NULL};
static const em_module_ops module_dict_ops = {"ModuleDict", NULL, NULL, NULL};

static em_module *numbered(const em_module_ops *ops, int n, em_module *const *ms) {
  em_module *m = em_module_create(ops, NULL);
  em_status st = m ? EM_OK : em_last_status();
  for (int i = 0; i < n; i++) {
    if (st) { /* release what we were given */
      em_module_release(ms[i]);
      continue;
    }
    if (!ms[i]) {
      st = em__set_error(EM_ERR_INVALID, "%s: module %d is NULL", ops->type_name, i);
      continue;
    }
    char name[24];
    snprintf(name, sizeof name, "%d", i);
    st = em_module_register_module(m, name, ms[i]);
  }
  return m ? finish(m, st) : NULL;
}

em_module *em_nn_sequential(int n, em_module *const *modules) {
  return numbered(&sequential_ops, n, modules);
}
em_module *em_nn_module_list(int n, em_module *const *modules) {
  return numbered(&module_list_ops, n, modules);
}

em_status em_nn_sequential_append(em_module *seq, em_module *m) {
  char name[24];
  snprintf(name, sizeof name, "%d", em_module_num_children(seq));
  return em_module_register_module(seq, name, m);
}

em_module *em_nn_module_dict(int n, const char *const *names, em_module *const *modules) {
  em_module *m = em_module_create(&module_dict_ops, NULL);
  em_status st = m ? EM_OK : em_last_status();
  for (int i = 0; i < n; i++) {
    if (st) {
      em_module_release(modules[i]);
      continue;
    }
    st = em_module_register_module(m, names[i], modules[i]);
  }
  return m ? finish(m, st) : NULL;
}
