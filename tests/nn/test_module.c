/* The module system and the basic layers: registration, dotted names,
 * state dicts, train/eval, repr, Linear/Bilinear/Embedding/Dropout and the
 * containers. */
#include "core/core_impl.h"
#include "nn/nn.h"
#include "tests/harness.h"

static em_module *mlp(void) {
  em_module *inner = em_nn_sequential(2, (em_module *[]){em_nn_linear(4, 3, true), em_nn_relu()});
  return em_nn_sequential(3, (em_module *[]){inner, em_nn_dropout(0.5), em_nn_linear(3, 2, false)});
}

EM_TEST(dotted_names_and_order) {
  em_module *net = mlp();
  ASSERT_NOTNULL(net);
  em_named_tensors p;
  ASSERT_OK(em_module_named_parameters(net, &p));
  ASSERT_EQ(p.n, 3);
  ASSERT_STREQ(p.names[0], "0.0.weight");
  ASSERT_STREQ(p.names[1], "0.0.bias");
  ASSERT_STREQ(p.names[2], "2.weight");
  ASSERT_SHAPE(p.tensors[0], 3, 4);
  ASSERT_TRUE(p.tensors[0]->requires_grad);
  em_named_tensors_free(&p);
  ASSERT_EQ(em_module_num_parameters(net), 3 * 4 + 3 + 2 * 3);
  em_module_release(net);
}

EM_TEST(repr_matches_pytorch) {
  em_module *net = mlp();
  char *r = em_module_repr(net);
  ASSERT_STREQ(r,
               "Sequential(\n"
               "  (0): Sequential(\n"
               "    (0): Linear(in_features=4, out_features=3, bias=True)\n"
               "    (1): ReLU()\n"
               "  )\n"
               "  (1): Dropout(p=0.5, inplace=False)\n"
               "  (2): Linear(in_features=3, out_features=2, bias=False)\n"
               ")");
  free(r);
  em_module_release(net);
}

EM_TEST(registration_errors) {
  em_module *m = em_nn_linear(2, 2, true);
  em_tensor *t = em_tensor_zeros(EM_DIMS(2), EM_FLOAT32);
  ASSERT_ERR(em_module_register_parameter(m, "a.b", t), EM_ERR_INVALID, "can't contain \".\"");
  ASSERT_ERR(em_module_register_parameter(m, "", t), EM_ERR_INVALID, "can't be empty");
  ASSERT_ERR(em_module_register_buffer(m, "weight", t, true), EM_ERR_INVALID, "already exists");
  em_tensor *i = em_tensor_zeros(EM_DIMS(2), EM_INT64);
  ASSERT_ERR(em_module_register_parameter(m, "idx", i), EM_ERR_DTYPE, "only floating-point");
  ASSERT_OK(em_module_register_buffer(m, "stat", i, true));
  ASSERT_ERR(em_module_register_module(m, "x", NULL), EM_ERR_INVALID, "is NULL");
  em_tensor *x = em_tensor_ones(EM_DIMS(1, 3), EM_FLOAT32);
  ASSERT_NULL_ERR(em_module_forward(m, x), EM_ERR_SHAPE, "cannot be multiplied");
  em_module *list = em_nn_module_list(1, (em_module *[]){em_nn_relu()});
  ASSERT_NULL_ERR(em_module_forward(list, x), EM_ERR_NOTIMPL, "missing the required \"forward\"");
  em_module_release(list);
  em_tensor_release(x), em_tensor_release(i), em_tensor_release(t);
  em_module_release(m);
}

EM_TEST(state_dict_round_trip_and_strict_errors) {
  em_module *a = mlp(), *b = mlp();
  em_tensor *buf = em_tensor_full(EM_DIMS(1), em_scalar_int(7), EM_INT64);
  ASSERT_OK(em_module_register_buffer(a, "steps", buf, true));
  ASSERT_OK(em_module_register_buffer(b, "steps", buf, true));
  em_tensor *tmp = em_tensor_zeros(EM_DIMS(1), EM_FLOAT32);
  ASSERT_OK(em_module_register_buffer(b, "scratch", tmp, false)); /* not saved */
  em_state_dict *sd = em_module_state_dict(a);
  ASSERT_EQ(em_state_dict_size(sd), 4);
  ASSERT_STREQ(em_state_dict_name_at(sd, 0), "steps"); /* own entries before children's */
  ASSERT_OK(em_module_load_state_dict(b, sd, true));
  em_tensor *wa = em_module_parameter(em_module_child(em_module_child(a, "0"), "0"), "weight");
  em_tensor *wb = em_module_parameter(em_module_child(em_module_child(b, "0"), "0"), "weight");
  bool eq = false;
  ASSERT_OK(em_tensor_equal(wa, wb, &eq));
  ASSERT_TRUE(eq && wa->storage != wb->storage);
  /* state_dict tensors share storage with the parameters and carry no grad */
  ASSERT_TRUE(em_state_dict_get(sd, "0.0.weight")->storage == wa->storage);
  ASSERT_TRUE(!em_state_dict_get(sd, "0.0.weight")->requires_grad);

  em_state_dict *bad = em_state_dict_create();
  em_tensor *wrong = em_tensor_zeros(EM_DIMS(3, 5), EM_FLOAT32);
  ASSERT_OK(em_state_dict_set(bad, "0.0.weight", wrong));
  ASSERT_OK(em_state_dict_set(bad, "extra", wrong));
  ASSERT_ERR(em_module_load_state_dict(b, bad, true), EM_ERR_INVALID, "Unexpected key(s) in state_dict: \"extra\"");
  ASSERT_TRUE(strstr(em_last_error(), "Missing key(s) in state_dict: \"steps\", \"0.0.bias\", \"2.weight\""));
  ASSERT_TRUE(strstr(em_last_error(), "size mismatch for 0.0.weight: copying a param with shape [3, 5] from checkpoint, the shape in current model is [3, 4]"));
  /* non-strict still refuses a shape mismatch and loads nothing */
  ASSERT_ERR(em_module_load_state_dict(b, bad, false), EM_ERR_INVALID, "size mismatch");
  ASSERT_OK(em_tensor_equal(wa, wb, &eq));
  ASSERT_TRUE(eq);
  em_state_dict_free(bad), em_state_dict_free(sd);
  em_tensor_release(wrong), em_tensor_release(buf), em_tensor_release(tmp);
  em_module_release(a), em_module_release(b);
}

static em_status count_apply(em_module *m, void *ctx) {
  char *order = ctx;
  strncat(order, em_module_type_name(m), 200);
  strcat(order, " ");
  return EM_OK;
}

EM_TEST(train_eval_apply_zero_grad) {
  em_module *net = mlp();
  em_module_train(net, false);
  ASSERT_TRUE(!em_module_is_training(em_module_child(net, "1")));
  em_module_train(net, true);
  ASSERT_TRUE(em_module_is_training(em_module_child(em_module_child(net, "0"), "1")));
  char order[512] = "";
  ASSERT_OK(em_module_apply(net, count_apply, order));
  ASSERT_STREQ(order, "Linear ReLU Sequential Dropout Linear Sequential ");
  em_tensor *x = em_tensor_ones(EM_DIMS(5, 4), EM_FLOAT32);
  em_tensor *y = em_module_forward(net, x);
  ASSERT_SHAPE(y, 5, 2);
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *w = em_module_parameter(em_module_child(net, "2"), "weight");
  em_tensor *g = em_tensor_grad(w);
  ASSERT_TRUE(g != NULL);
  em_tensor_release(g);
  ASSERT_OK(em_module_zero_grad(net, false));
  g = em_tensor_grad(w);
  ASSERT_TENSOR_CLOSE(g, ((double[]){0, 0, 0, 0, 0, 0}), 0, 0);
  em_tensor_release(g);
  ASSERT_OK(em_module_zero_grad(net, true));
  ASSERT_TRUE(em_tensor_grad(w) == NULL);
  em_tensor_release(s), em_tensor_release(y), em_tensor_release(x);
  em_module_release(net);
}

EM_TEST(linear_matches_a_reference_and_pytorch_init) {
  em_manual_seed(3);
  em_module *l = em_nn_linear(100, 7, true);
  em_tensor *w = em_module_parameter(l, "weight"), *b = em_module_parameter(l, "bias");
  double bound = 0.1, maxabs = 0;
  for (int64_t i = 0; i < w->numel; i++) maxabs = fmax(maxabs, fabs(em_test_get(w, i)));
  ASSERT_TRUE(maxabs <= bound && maxabs > 0.08); /* uniform(-1/sqrt(100), 1/sqrt(100)) */
  em_tensor *x = em_tensor_randn(EM_DIMS(2, 3, 100), EM_FLOAT32, NULL);
  em_tensor *y = em_module_forward(l, x);
  ASSERT_SHAPE(y, 2, 3, 7);
  double expect[42];
  for (int r = 0; r < 6; r++)
    for (int o = 0; o < 7; o++) {
      double acc = em_test_get(b, o);
      for (int i = 0; i < 100; i++) acc += em_test_get(x, r * 100 + i) * em_test_get(w, o * 100 + i);
      expect[r * 7 + o] = acc;
    }
  ASSERT_TENSOR_CLOSE(y, expect, 1e-5, 1e-5);
  em_tensor_release(y), em_tensor_release(x);
  em_module_release(l);
}

static em_tensor *bilinear_fn(int n, em_tensor *const *in, void *ctx) {
  return em_nn_f_bilinear(in[0], in[1], in[2], in[3]);
}

EM_TEST(bilinear_forward_and_gradcheck) {
  em_tensor *x1 = em_tensor_randn(EM_DIMS(3, 2), EM_FLOAT64, NULL);
  em_tensor *x2 = em_tensor_randn(EM_DIMS(3, 4), EM_FLOAT64, NULL);
  em_tensor *w = em_tensor_randn(EM_DIMS(5, 2, 4), EM_FLOAT64, NULL);
  em_tensor *b = em_tensor_randn(EM_DIMS(5), EM_FLOAT64, NULL);
  em_tensor *y = em_nn_f_bilinear(x1, x2, w, b);
  ASSERT_SHAPE(y, 3, 5);
  double expect[15];
  for (int n = 0; n < 3; n++)
    for (int k = 0; k < 5; k++) {
      double acc = em_test_get(b, k);
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
          acc += em_test_get(x1, n * 2 + i) * em_test_get(w, k * 8 + i * 4 + j) * em_test_get(x2, n * 4 + j);
      expect[n * 5 + k] = acc;
    }
  ASSERT_TENSOR_CLOSE(y, expect, 1e-12, 1e-12);
  em_tensor *in[4] = {x1, x2, w, b};
  for (int i = 0; i < 4; i++) ASSERT_OK(em_tensor_set_requires_grad(in[i], true));
  ASSERT_OK(em_ag_gradcheck(bilinear_fn, NULL, 4, in, 1e-6, 1e-6, 1e-4));
  em_module *m = em_nn_bilinear(2, 4, 5, true);
  char *r = em_module_repr(m);
  ASSERT_STREQ(r, "Bilinear(in1_features=2, in2_features=4, out_features=5, bias=True)");
  free(r);
  em_module_release(m);
  for (int i = 0; i < 4; i++) em_tensor_release(in[i]);
  em_tensor_release(y);
}

EM_TEST(embedding_padding_row_gets_no_gradient) {
  em_module *e = em_nn_embedding(5, 3, true, 1);
  em_tensor *w = em_module_parameter(e, "weight");
  em_tensor *pad_row = em_tensor_select(w, 0, 1);
  ASSERT_TENSOR_CLOSE(pad_row, ((double[]){0, 0, 0}), 0, 0);
  em_tensor_release(pad_row);
  em_tensor *idx = em_tensor_from_data((int64_t[]){1, 3, 3, 0, 1, 4}, EM_DIMS(2, 3), EM_INT64);
  em_tensor *y = em_module_forward(e, idx);
  ASSERT_SHAPE(y, 2, 3, 3);
  em_tensor *s = em_tensor_sum(y, 0, NULL, false, EM_DTYPE_UNDEFINED);
  ASSERT_OK(em_backward(s, NULL, false));
  em_tensor *g = em_tensor_grad(w);
  ASSERT_TENSOR_CLOSE(g, ((double[]){1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1}), 0, 0);
  em_tensor *bad = em_tensor_from_data((int64_t[]){5}, EM_DIMS(1), EM_INT64);
  ASSERT_NULL_ERR(em_module_forward(e, bad), EM_ERR_INDEX, "out of bounds");
  char *r = em_module_repr(e);
  ASSERT_STREQ(r, "Embedding(5, 3, padding_idx=1)");
  free(r);
  em_tensor_release(bad), em_tensor_release(g), em_tensor_release(s), em_tensor_release(y);
  em_tensor_release(idx);
  em_module_release(e);
}

EM_TEST(dropout_scales_and_respects_eval) {
  em_manual_seed(11);
  em_tensor *x = em_tensor_ones(EM_DIMS(100000), EM_FLOAT32);
  em_tensor *y = em_nn_f_dropout(x, 0.25, true, NULL);
  int64_t zeros = 0;
  for (int64_t i = 0; i < y->numel; i++) {
    double v = em_test_get(y, i);
    if (v == 0) zeros++;
    else ASSERT_CLOSE(v, 1 / 0.75, 1e-6, 0);
  }
  ASSERT_TRUE(zeros > 24000 && zeros < 26000);
  em_tensor *e = em_nn_f_dropout(x, 0.25, false, NULL);
  ASSERT_TRUE(e == x);
  ASSERT_NULL_ERR(em_nn_f_dropout(x, 1.5, true, NULL), EM_ERR_INVALID, "between 0 and 1");
  em_tensor_release(e), em_tensor_release(y), em_tensor_release(x);
}

EM_TEST(activation_modules) {
  em_tensor *x = em_tensor_from_data((float[]){-2, -0.5, 0, 1.5}, EM_DIMS(4), EM_FLOAT32);
  struct { em_module *m; const char *repr; double out[4]; } cases[] = {
      {em_nn_relu(), "ReLU()", {0, 0, 0, 1.5}},
      {em_nn_leaky_relu(0.1), "LeakyReLU(negative_slope=0.1)", {-0.2, -0.05, 0, 1.5}},
      {em_nn_tanh(), "Tanh()", {tanh(-2.0), tanh(-0.5), 0, tanh(1.5)}},
      {em_nn_sigmoid(), "Sigmoid()", {1 / (1 + exp(2.0)), 1 / (1 + exp(0.5)), 0.5, 1 / (1 + exp(-1.5))}},
      {em_nn_gelu(false), "GELU(approximate='none')",
       {-2 * 0.5 * erfc(2 / sqrt(2.0)), -0.5 * 0.5 * erfc(0.5 / sqrt(2.0)), 0, 1.5 * 0.5 * erfc(-1.5 / sqrt(2.0))}},
      {em_nn_silu(), "SiLU()", {-2 / (1 + exp(2.0)), -0.5 / (1 + exp(0.5)), 0, 1.5 / (1 + exp(-1.5))}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    em_tensor *y = em_module_forward(cases[i].m, x);
    ASSERT_TENSOR_CLOSE_N(y, cases[i].out, 4, 1e-5, 1e-6);
    char *r = em_module_repr(cases[i].m);
    ASSERT_STREQ(r, cases[i].repr);
    free(r);
    em_tensor_release(y);
    em_module_release(cases[i].m);
  }
  em_module *sm = em_nn_softmax(0);
  em_tensor *p = em_module_forward(sm, x);
  double z = exp(-2.0) + exp(-0.5) + 1 + exp(1.5);
  ASSERT_TENSOR_CLOSE(p, ((double[]){exp(-2.0) / z, exp(-0.5) / z, 1 / z, exp(1.5) / z}), 1e-5, 1e-7);
  em_tensor_release(p);
  em_module_release(sm);
  em_tensor_release(x);
}

EM_TEST(sequential_append_and_dict) {
  em_module *seq = em_nn_sequential(0, NULL);
  ASSERT_OK(em_nn_sequential_append(seq, em_nn_flatten(1, -1)));
  ASSERT_OK(em_nn_sequential_append(seq, em_nn_identity()));
  em_tensor *x = em_tensor_zeros(EM_DIMS(2, 3, 4), EM_FLOAT32);
  em_tensor *y = em_module_forward(seq, x);
  ASSERT_SHAPE(y, 2, 12);
  em_module *d = em_nn_module_dict(2, (const char *[]){"enc", "dec"},
                                   (em_module *[]){em_nn_linear(2, 2, true), em_nn_linear(2, 1, true)});
  em_named_tensors p;
  ASSERT_OK(em_module_named_parameters(d, &p));
  ASSERT_STREQ(p.names[2], "dec.weight");
  em_named_tensors_free(&p);
  /* a NULL entry fails the constructor and releases the others */
  ASSERT_NULL_ERR(em_nn_sequential(2, (em_module *[]){em_nn_relu(), NULL}), EM_ERR_INVALID, "is NULL");
  em_tensor_release(y), em_tensor_release(x);
  em_module_release(seq), em_module_release(d);
}

EM_TEST(shared_parameters_listed_once) {
  em_module *a = em_nn_linear(3, 3, false);
  em_module *seq = em_nn_sequential(2, (em_module *[]){em_module_retain(a), em_module_retain(a)});
  em_named_tensors p;
  ASSERT_OK(em_module_named_parameters(seq, &p));
  ASSERT_EQ(p.n, 1);
  ASSERT_STREQ(p.names[0], "0.weight");
  em_named_tensors_free(&p);
  em_module_release(seq), em_module_release(a);
}

EM_TEST_MAIN()
