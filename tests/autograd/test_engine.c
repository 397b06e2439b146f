/* The autograd engine: backward semantics, retain_graph, version counters,
 * grad mode, hooks and their timing, autograd.grad, custom functions. */
#include "autograd/autograd.h"
#include "core/core_impl.h"
#include "tests/harness.h"

static em_tensor *leaf(const double *v, int ndim, const int64_t *shape) {
  em_tensor *t = em_tensor_from_data(v, ndim, shape, EM_FLOAT64);
  em_tensor_set_requires_grad(t, true);
  return t;
}
#define LEAF(vals, ...) leaf((const double[])vals, EM_DIMS(__VA_ARGS__))
#define V(...) {__VA_ARGS__}

static em_tensor *sum(em_tensor *t) { return em_tensor_sum(t, 0, NULL, false, EM_DTYPE_UNDEFINED); }

EM_TEST(backward_product_rule) {
  em_tensor *x = LEAF(V(1, 2, 3), 3), *w = LEAF(V(4, 5, 6), 3);
  em_tensor *p = em_tensor_mul(x, w), *s = sum(p);
  ASSERT_STREQ(em_tensor_grad_fn_name(s), "SumBackward0");
  ASSERT_STREQ(em_tensor_grad_fn_name(p), "MulBackward0");
  ASSERT_TRUE(em_tensor_grad_fn_name(x) == NULL);
  ASSERT_TRUE(!em_tensor_is_leaf(p) && em_tensor_is_leaf(x));
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *gx = em_tensor_grad(x), *gw = em_tensor_grad(w);
  ASSERT_TENSOR_CLOSE(gx, ((double[]){4, 5, 6}), 0, 0);
  ASSERT_TENSOR_CLOSE(gw, ((double[]){1, 2, 3}), 0, 0);
  ASSERT_TRUE(em_tensor_grad(p) == NULL); /* non-leaf keeps no grad */
  em_tensor *list[] = {x, w, p, s, gx, gw};
  for (size_t i = 0; i < 6; i++) em_tensor_release(list[i]);
}

EM_TEST(explicit_gradient_and_scalar_rule) {
  em_tensor *x = LEAF(V(1, 2, 3), 3);
  em_tensor *y = em_tensor_mul_scalar(x, em_scalar_float(2));
  ASSERT_ERR(em_backward(y, NULL, false), EM_ERR_STATE, "only for scalar outputs");
  em_tensor *g = em_tensor_from_data((double[]){1, 10, 100}, EM_DIMS(3), EM_FLOAT64);
  em_tensor *bad = em_tensor_ones(EM_DIMS(2), EM_FLOAT64);
  ASSERT_ERR(em_backward(y, bad, false), EM_ERR_SHAPE, "mismatch in shape");
  ASSERT_OK(em_backward(y, g, false));
  em_tensor *gx = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(gx, ((double[]){2, 20, 200}), 0, 0);
  em_tensor *list[] = {x, y, g, bad, gx};
  for (size_t i = 0; i < 5; i++) em_tensor_release(list[i]);
}

EM_TEST(retain_graph_and_accumulation) {
  em_tensor *x = LEAF(V(3), 1);
  em_tensor *y = em_tensor_mul(x, x), *s = sum(y); /* d/dx = 2x = 6 */
  ASSERT_OK(em_backward(s, NULL, true));
  ASSERT_OK(em_backward(s, NULL, false)); /* accumulates: 12 */
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){12}), 0, 0);
  ASSERT_ERR(em_backward(s, NULL, false), EM_ERR_STATE, "backward through the graph a second time");
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(y), em_tensor_release(x);
}

EM_TEST(saved_tensor_modified_in_place_is_an_error) {
  em_tensor *x = LEAF(V(0.5, 1), 2);
  em_tensor *e = em_tensor_exp(x); /* saves its output */
  em_tensor *s = sum(e);
  ASSERT_OK(em_tensor_add_(e, e)); /* recorded in place: bumps e's version */
  em_tensor *s2 = sum(e);
  ASSERT_ERR(em_backward(s, NULL, false), EM_ERR_STATE, "modified by an inplace operation");
  ASSERT_TRUE(strstr(em_last_error(), "is at version 1; expected version 0") != NULL);
  em_tensor_release(s2), em_tensor_release(s), em_tensor_release(e), em_tensor_release(x);
}

EM_TEST(leaf_in_place_rules) {
  em_tensor *x = LEAF(V(1, 2), 2);
  ASSERT_ERR(em_tensor_add_(x, x), EM_ERR_STATE, "a leaf Variable that requires grad");
  em_tensor *v = em_tensor_select(x, 0, 0);
  em_tensor *one = em_tensor_wrapped_scalar(em_scalar_int(1));
  ASSERT_ERR(em_tensor_mul_(v, one), EM_ERR_STATE, "a view of a leaf Variable");
  bool prev = em_set_grad_enabled(false); /* an optimizer step */
  ASSERT_OK(em_tensor_add_(x, one));
  em_set_grad_enabled(prev);
  ASSERT_TENSOR_CLOSE(x, ((double[]){2, 3}), 0, 0);
  ASSERT_EQ(em_tensor_version(x), 1);
  em_tensor_release(one), em_tensor_release(v), em_tensor_release(x);
}

EM_TEST(no_grad_records_nothing) {
  em_tensor *x = LEAF(V(1, 2), 2);
  bool prev = em_set_grad_enabled(false);
  em_tensor *y = em_tensor_mul(x, x);
  em_set_grad_enabled(prev);
  ASSERT_TRUE(!y->requires_grad && em_tensor_grad_fn_name(y) == NULL);
  em_tensor *d = em_tensor_detach(x);
  ASSERT_TRUE(!d->requires_grad);
  em_tensor *z = em_tensor_mul(d, x), *s = sum(z);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x); /* only through the non-detached operand */
  ASSERT_TENSOR_CLOSE(g, ((double[]){1, 2}), 0, 0);
  em_tensor *list[] = {x, y, d, z, s, g};
  for (size_t i = 0; i < 6; i++) em_tensor_release(list[i]);
}

EM_TEST(requires_grad_only_for_floats) {
  em_tensor *i = em_tensor_zeros(EM_DIMS(2), EM_INT64);
  ASSERT_ERR(em_tensor_set_requires_grad(i, true), EM_ERR_DTYPE, "only Tensors of floating point");
  em_tensor *x = LEAF(V(1), 1);
  em_tensor *y = em_tensor_mul(x, x);
  ASSERT_ERR(em_tensor_set_requires_grad(y, false), EM_ERR_STATE, "only change requires_grad flags of leaf");
  ASSERT_ERR(em_backward(i, NULL, false), EM_ERR_STATE, "does not require grad");
  em_tensor_release(i), em_tensor_release(x), em_tensor_release(y);
}

static em_status double_it(em_tensor *g, em_tensor **rep, void *ctx) {
  (*(int *)ctx)++;
  *rep = em_tensor_mul_scalar(g, em_scalar_float(2));
  return *rep ? EM_OK : em_last_status();
}

EM_TEST(tensor_hooks_replace_gradients) {
  int calls = 0, calls_mid = 0;
  em_tensor *x = LEAF(V(1, 2), 2);
  em_tensor *m = em_tensor_mul_scalar(x, em_scalar_float(3));
  int h1 = em_tensor_register_hook(x, double_it, &calls, NULL);
  int h2 = em_tensor_register_hook(m, double_it, &calls_mid, NULL);
  ASSERT_TRUE(h1 > 0 && h2 > 0);
  em_tensor *s = sum(m);
  ASSERT_OK(em_backward(s, NULL, true));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){12, 12}), 0, 0); /* 1 * 2 (mid) * 3 * 2 (leaf) */
  ASSERT_EQ(calls, 1);
  ASSERT_EQ(calls_mid, 1);
  ASSERT_TRUE(em_tensor_remove_hook(x, h1));
  ASSERT_TRUE(em_tensor_remove_hook(m, h2));
  ASSERT_TRUE(!em_tensor_remove_hook(x, h1));
  ASSERT_OK(em_tensor_set_grad(x, NULL));
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor_release(g);
  g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){3, 3}), 0, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(m), em_tensor_release(x);
}

/* The DDP reducer relies on this: a leaf's post-accumulate hook fires as
 * soon as its gradient is final, before backward reaches earlier layers. */
typedef struct order {
  em_tensor *early; /* used first in the forward pass */
  int fired[2];
  bool early_had_grad_when_late_fired;
  int seq;
} order;

static em_status late_hook(em_tensor *leaf, void *ctx) {
  order *o = ctx;
  o->fired[1] = ++o->seq;
  em_tensor *g = em_tensor_grad(o->early);
  o->early_had_grad_when_late_fired = g != NULL;
  em_tensor_release(g);
  return EM_OK;
}
static em_status early_hook(em_tensor *leaf, void *ctx) {
  order *o = ctx;
  o->fired[0] = ++o->seq;
  return EM_OK;
}

EM_TEST(post_accumulate_hooks_fire_when_grad_is_final) {
  em_tensor *w1 = LEAF(V(1, 2, 3, 4), 2, 2), *w2 = LEAF(V(0.5, -1, 2, 1), 2, 2);
  em_tensor *x = em_tensor_from_data((double[]){1, -1, 2, 0.5}, EM_DIMS(2, 2), EM_FLOAT64);
  order o = {.early = w1};
  ASSERT_TRUE(em_tensor_register_post_accumulate_grad_hook(w1, early_hook, &o, NULL) > 0);
  ASSERT_TRUE(em_tensor_register_post_accumulate_grad_hook(w2, late_hook, &o, NULL) > 0);
  em_tensor *h = em_tensor_mm(x, w1), *r = em_tensor_tanh(h), *y = em_tensor_mm(r, w2);
  em_tensor *s = sum(y);
  ASSERT_OK(em_backward(s, NULL, false));
  ASSERT_EQ(o.fired[1], 1); /* w2, nearest the loss, first */
  ASSERT_EQ(o.fired[0], 2);
  ASSERT_TRUE(!o.early_had_grad_when_late_fired);
  em_tensor *m = em_tensor_mm(x, w1);
  ASSERT_EQ(em_tensor_register_post_accumulate_grad_hook(m, early_hook, &o, NULL), -1);
  ASSERT_TRUE(strstr(em_last_error(), "non-leaf") != NULL);
  em_tensor *list[] = {w1, w2, x, h, r, y, s, m};
  for (size_t i = 0; i < 8; i++) em_tensor_release(list[i]);
}

EM_TEST(autograd_grad_leaves_dot_grad_alone) {
  em_tensor *x = LEAF(V(1, 2), 2), *u = LEAF(V(5), 1);
  em_tensor *y = em_tensor_mul(x, x), *s = sum(y);
  em_tensor *in[2] = {x, u}, *g[2];
  ASSERT_ERR(em_ag_grad(1, &s, NULL, 2, in, true, false, g), EM_ERR_STATE, "not have been used");
  ASSERT_OK(em_ag_grad(1, &s, NULL, 2, in, false, true, g));
  ASSERT_TENSOR_CLOSE(g[0], ((double[]){2, 4}), 0, 0);
  ASSERT_TRUE(g[1] == NULL);
  ASSERT_TRUE(em_tensor_grad(x) == NULL);
  em_tensor_release(g[0]);
  /* with respect to an intermediate */
  em_tensor *x2 = LEAF(V(3), 1);
  em_tensor *mid = em_tensor_exp(x2), *out = em_tensor_mul(mid, mid), *s2 = sum(out);
  em_tensor *gm;
  ASSERT_OK(em_ag_grad(1, &s2, NULL, 1, &mid, false, false, &gm));
  ASSERT_TENSOR_CLOSE(gm, ((double[]){2 * exp(3.0)}), 1e-12, 0);
  em_tensor *list[] = {x, u, y, s, x2, mid, out, s2, gm};
  for (size_t i = 0; i < 9; i++) em_tensor_release(list[i]);
}

EM_TEST(retain_grad_on_non_leaf) {
  em_tensor *x = LEAF(V(1, 2), 2);
  em_tensor *m = em_tensor_mul_scalar(x, em_scalar_float(3));
  ASSERT_OK(em_tensor_retain_grad(m));
  em_tensor *y = em_tensor_mul(m, m), *s = sum(y);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *gm = em_tensor_grad(m);
  ASSERT_TENSOR_CLOSE(gm, ((double[]){6, 12}), 0, 0);
  em_tensor *list[] = {x, m, y, s, gm};
  for (size_t i = 0; i < 5; i++) em_tensor_release(list[i]);
}

/* A custom function: cube, saving its input. */
static em_status cube_fwd(em_ag_ctx *ctx, int nin, em_tensor *const *in, int *nout, em_tensor **out) {
  EM_CHECK(em_ag_ctx_save(ctx, 1, in));
  em_tensor *sq = em_tensor_mul(in[0], in[0]);
  if (!sq) return em_last_status();
  out[0] = em_tensor_mul(sq, in[0]);
  em_tensor_release(sq);
  out[1] = em_tensor_gt_scalar(in[0], em_scalar_int(0)); /* a mask output */
  if (!out[0] || !out[1]) return em_last_status();
  (*(int *)em_ag_ctx_user(ctx))++;
  *nout = 2;
  return em_ag_ctx_mark_non_differentiable(ctx, 1);
}
static em_status cube_bwd(em_ag_ctx *ctx, int nout, em_tensor *const *go, int nin, em_tensor **gi) {
  em_tensor *x = em_ag_ctx_saved(ctx, 0);
  if (!x) return em_last_status();
  if (!go[0] || !em_ag_ctx_needs_input_grad(ctx, 0)) return EM_OK;
  em_tensor *sq = em_tensor_mul(x, x);
  em_tensor *t = em_tensor_mul_scalar(sq, em_scalar_float(3));
  gi[0] = em_tensor_mul(t, go[0]);
  em_tensor_release(sq), em_tensor_release(t);
  return gi[0] ? EM_OK : em_last_status();
}
static const em_ag_function cube = {"CubeBackward", cube_fwd, cube_bwd};

static em_tensor *cube_apply(int n, em_tensor *const *in, void *ctx) {
  em_tensor *out[EM_AG_MAX_OUTPUTS];
  int nout;
  if (em_ag_function_apply(&cube, ctx, NULL, 1, in, &nout, out)) return NULL;
  em_tensor_release(out[1]);
  return out[0];
}

EM_TEST(custom_function) {
  int calls = 0;
  em_tensor *x = LEAF(V(-1, 0.5, 2), 3);
  ASSERT_OK(em_ag_gradcheck(cube_apply, &calls, 1, &x, 1e-6, 1e-6, 1e-4));
  ASSERT_TRUE(calls > 1);
  em_tensor *out[EM_AG_MAX_OUTPUTS];
  int nout;
  ASSERT_OK(em_ag_function_apply(&cube, &calls, NULL, 1, &x, &nout, out));
  ASSERT_EQ(nout, 2);
  ASSERT_STREQ(em_tensor_grad_fn_name(out[0]), "CubeBackward");
  ASSERT_TRUE(!out[1]->requires_grad);
  em_tensor *s = sum(out[0]);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){3, 0.75, 12}), 1e-12, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(out[0]), em_tensor_release(out[1]);
  em_tensor_release(x);
}

EM_TEST(gradcheck_reports_a_wrong_formula) {
  /* the correct formula passes; demanding more precision than central
   * differences give must report a mismatch (the check can fail) */
  em_tensor *x = LEAF(V(1, 2), 2);
  int calls = 0;
  ASSERT_OK(em_ag_gradcheck(cube_apply, &calls, 1, &x, 1e-6, 1e-6, 1e-4));
  ASSERT_ERR(em_ag_gradcheck(cube_apply, &calls, 1, &x, 1e-6, 0, 1e-12), EM_ERR_INVALID,
             "Jacobian mismatch");
  em_tensor_release(x);
}

EM_TEST(deep_chain_does_not_overflow_the_stack) {
  em_tensor *x = LEAF(V(1), 1);
  em_tensor *y = em_tensor_retain(x);
  for (int i = 0; i < 100000; i++) {
    em_tensor *z = em_tensor_mul_scalar(y, em_scalar_float(1.0));
    em_tensor_release(y);
    y = z;
  }
  em_tensor *s = sum(y);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){1}), 0, 0);
  em_tensor_release(g), em_tensor_release(s), em_tensor_release(y), em_tensor_release(x);
}

EM_TEST(grad_dtype_follows_the_leaf) {
  em_tensor *x = em_tensor_from_data((float[]){1, 2}, EM_DIMS(2), EM_FLOAT32);
  ASSERT_OK(em_tensor_set_requires_grad(x, true));
  em_tensor *d = em_tensor_from_data((double[]){3, 4}, EM_DIMS(2), EM_FLOAT64);
  em_tensor *y = em_tensor_mul(x, d); /* float64 */
  ASSERT_EQ(y->dtype, EM_FLOAT64);
  em_tensor *s = sum(y);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_EQ(g->dtype, EM_FLOAT32);
  ASSERT_TENSOR_CLOSE(g, ((double[]){3, 4}), 0, 0);
  em_tensor *list[] = {x, d, y, s, g};
  for (size_t i = 0; i < 5; i++) em_tensor_release(list[i]);
}

typedef struct cb_state {
  int queued, ran;
  em_tensor *leaf;
  bool grad_final_when_ran;
} cb_state;

static em_status final_cb(void *ctx) {
  cb_state *c = ctx;
  c->ran++;
  em_tensor *g = em_tensor_grad(c->leaf);
  c->grad_final_when_ran = g != NULL;
  em_tensor_release(g);
  return EM_OK;
}

static em_status queue_once(em_tensor *leaf, void *ctx) {
  cb_state *c = ctx;
  if (!c->queued++) return em_ag_queue_callback(final_cb, c);
  return EM_OK;
}

EM_TEST(queued_callbacks_run_after_backward) {
  em_tensor *a = LEAF(V(1, 2), 2), *b = LEAF(V(3), 1);
  cb_state c = {.leaf = a};
  ASSERT_TRUE(em_tensor_register_post_accumulate_grad_hook(b, queue_once, &c, NULL) > 0);
  ASSERT_TRUE(em_tensor_register_post_accumulate_grad_hook(a, queue_once, &c, NULL) > 0);
  em_tensor *p = em_tensor_mul(a, b), *s = sum(p);
  ASSERT_OK(em_backward(s, NULL, false));
  ASSERT_EQ(c.queued, 2);
  ASSERT_EQ(c.ran, 1);
  ASSERT_TRUE(c.grad_final_when_ran); /* after every leaf got its grad */
  ASSERT_TRUE(!em_ag_in_backward());
  ASSERT_ERR(em_ag_queue_callback(final_cb, &c), EM_ERR_STATE, "only allowed during a backward");
  em_tensor_release(s), em_tensor_release(p), em_tensor_release(a), em_tensor_release(b);
}

EM_TEST(reachable_leaves_finds_used_parameters) {
  em_tensor *w1 = LEAF(V(1, 2), 2), *w2 = LEAF(V(3, 4), 2), *unused = LEAF(V(5), 1);
  em_tensor *x = em_tensor_from_data((double[]){1, 1}, EM_DIMS(2), EM_FLOAT64);
  em_tensor *h = em_tensor_mul(x, w1), *y = em_tensor_add(h, w2);
  em_tensor **leaves;
  int n;
  ASSERT_OK(em_ag_reachable_leaves(1, &y, &leaves, &n));
  ASSERT_EQ(n, 2);
  bool has1 = false, has2 = false;
  for (int i = 0; i < n; i++) {
    has1 |= leaves[i] == w1;
    has2 |= leaves[i] == w2;
    ASSERT_TRUE(leaves[i] != unused);
  }
  ASSERT_TRUE(has1 && has2);
  em_tensor_list_release(leaves, n);
  /* the graph is still usable afterwards */
  em_tensor *s = sum(y);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *list[] = {w1, w2, unused, x, h, y, s};
  for (size_t i = 0; i < 7; i++) em_tensor_release(list[i]);
}

/* v = y[1:]; v *= 10; y[0] = 3; backward through v: writing another part
 * of the base after the view was rebased must not trip the version check
 * of v's history (PyTorch handles this too). */
EM_TEST(view_history_survives_later_writes_to_the_base) {
  em_tensor *x = LEAF(V(1, 2, 3), 3);
  em_tensor *y = em_tensor_mul_scalar(x, em_scalar_float(1));
  em_tensor *v = em_tensor_slice(y, 0, 1, INT64_MAX, 1);
  em_tensor *ten = em_tensor_wrapped_scalar(em_scalar_float(10));
  ASSERT_OK(em_tensor_mul_(v, ten));
  em_tensor *first = em_tensor_select(y, 0, 0);
  em_tensor *three = em_tensor_wrapped_scalar(em_scalar_float(3));
  ASSERT_OK(em_tensor_copy_(first, three));
  em_tensor *w = em_tensor_mul_scalar(v, em_scalar_float(2)), *s = sum(w);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(x);
  ASSERT_TENSOR_CLOSE(g, ((double[]){0, 20, 20}), 0, 0);
  em_tensor *list[] = {x, y, v, ten, first, three, w, s, g};
  for (size_t i = 0; i < 9; i++) em_tensor_release(list[i]);
}

/* A Linear weight used as w^T gets its gradient as the transpose of a
 * column-major product: the leaf takes that storage over instead of
 * copying it (w.grad is then a plain tensor, no view), accumulates into it
 * correctly, and never aliases a gradient someone else still holds. */
static em_tensor *kept_grad;
static em_status keep_grad(em_tensor *grad, em_tensor **replacement, void *ctx) {
  (void)replacement, (void)ctx;
  em_tensor_release(kept_grad);
  kept_grad = em_tensor_retain(grad);
  return EM_OK;
}

EM_TEST(linear_weight_gradient_is_taken_over_not_aliased) {
  for (int hooked = 0; hooked < 2; hooked++) {
    em_tensor *w = LEAF(V(1, 2, 3, 4, 5, 6), 2, 3); /* [out 2, in 3] */
    em_tensor *x = em_tensor_from_data((const double[]){1, 0, 2, -1, 3, 1}, EM_DIMS(2, 3), EM_FLOAT64);
    if (hooked) ASSERT_TRUE(em_tensor_register_hook(w, keep_grad, NULL, NULL) >= 0);
    em_tensor *wt = em_tensor_t(w), *y = em_tensor_mm(x, wt), *s = sum(y);
    ASSERT_OK(em_backward(s, NULL, true));
    /* d sum(x w^T) / d w[o, i] = sum over rows of x[:, i] = {0, 3, 3} per output */
    em_tensor *g = em_tensor_grad(w);
    ASSERT_TENSOR_CLOSE(g, ((double[]){0, 3, 3, 0, 3, 3}), 0, 0);
    ASSERT_TRUE(g->base == NULL);
    ASSERT_TRUE(em_tensor_is_contiguous(g));
    ASSERT_OK(em_backward(s, NULL, false)); /* accumulates into the taken-over storage */
    ASSERT_TENSOR_CLOSE(g, ((double[]){0, 6, 6, 0, 6, 6}), 0, 0);
    if (hooked) { /* the hook's tensor is its own: w.grad's accumulation never showed in it */
      ASSERT_NOTNULL(kept_grad);
      ASSERT_TRUE(kept_grad->storage != g->storage);
      ASSERT_TENSOR_CLOSE(kept_grad, ((double[]){0, 3, 3, 0, 3, 3}), 0, 0);
      em_tensor_release(kept_grad);
      kept_grad = NULL;
    }
    em_tensor *list[] = {w, x, wt, y, s, g};
    for (size_t i = 0; i < 6; i++) em_tensor_release(list[i]);
  }
}

EM_TEST_MAIN()
