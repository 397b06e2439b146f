/* Every op family on the GPU against the CPU result: copies and dtype
 * conversions, fill, unary, binary (broadcast, scalars, non-contiguous),
 * comparisons, ternary, reductions (all dims, some dims, keepdim, strided,
 * large, empty), softmax and scans, cat/stack/repeat/flip/pad, the matmul
 * family (cuBLAS; float16/bfloat16; TF32), and the errors of what has no
 * CUDA kernel. Skips (77) without a CUDA device. */
#include "tests/gpu/gpu_util.h"

typedef em_tensor *(*unary_fn)(em_tensor *);
typedef em_tensor *(*binary_fn)(em_tensor *, em_tensor *);

static const em_dtype FLOATS[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16};
static const em_dtype ALL[] = {EM_FLOAT32, EM_FLOAT64, EM_FLOAT16, EM_BFLOAT16, EM_INT8,
                               EM_INT16,   EM_INT32,   EM_INT64,   EM_UINT8,    EM_BOOL};
#define N_OF(a) (int)(sizeof(a) / sizeof((a)[0]))

/* ---- copies ------------------------------------------------------------------------- */

EM_TEST(to_device_round_trips_every_dtype_and_layout) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(ALL); k++) {
    em_dtype dt = ALL[k];
    em_tensor *x = g_values(EM_DIMS(6, 7), dt, -50, 50, 1 + k);
    em_tensor *xt = em_tensor_transpose(x, 0, 1); /* a non-contiguous source */
    em_tensor *g = g_to(xt, GPU);
    ASSERT_NOTNULL(g);
    ASSERT_TRUE(em_device_eq(g->device, GPU));
    ASSERT_GPU_CLOSE(g, xt, 0, 0);
    em_tensor *g2 = em_tensor_clone(g); /* device -> device */
    ASSERT_GPU_CLOSE(g2, xt, 0, 0);
    em_tensor_release(g2), em_tensor_release(g), em_tensor_release(xt), em_tensor_release(x);
  }
  /* 0-dim and empty tensors */
  em_tensor *s = em_tensor_scalar(em_scalar_float(2.5), EM_FLOAT32);
  em_tensor *e = em_tensor_empty(EM_DIMS(0, 3), EM_INT64);
  em_tensor *gs = g_to(s, GPU), *ge = g_to(e, GPU);
  ASSERT_GPU_CLOSE(gs, s, 0, 0);
  ASSERT_GPU_CLOSE(ge, e, 0, 0);
  ASSERT_CLOSE(em_tensor_item_double(gs), 2.5, 0, 0);
  em_tensor_release(gs), em_tensor_release(ge), em_tensor_release(s), em_tensor_release(e);
}

EM_TEST(to_device_errors) {
  REQUIRE_CUDA();
  em_tensor *x = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  ASSERT_NULL_ERR(em_tensor_to_device(x, EM_DEVICE_CUDA(em_cuda_device_count())), EM_ERR_DEVICE,
                  "is not available");
  em_tensor *g = g_to(x, GPU);
  em_tensor *c = em_tensor_ones(EM_DIMS(2), EM_FLOAT32);
  /* a CPU tensor with dims does not join a CUDA op (a 0-dim one does) */
  ASSERT_NULL_ERR(em_tensor_add(g, c), EM_ERR_DEVICE, "expected all tensors to be on the same device");
  em_tensor_release(c), em_tensor_release(g), em_tensor_release(x);
}

EM_TEST(conversions_between_every_pair_of_dtypes) {
  REQUIRE_CUDA();
  for (int a = 0; a < N_OF(ALL); a++) {
    /* values that exercise saturation and wrapping */
    em_tensor *x = g_values(EM_DIMS(5, 9), ALL[a], -300, 300, 7 + a);
    em_tensor *g = g_to(x, GPU);
    ASSERT_NOTNULL(g);
    for (int b = 0; b < N_OF(ALL); b++) {
      em_tensor *c = em_tensor_to_dtype(x, ALL[b]), *d = em_tensor_to_dtype(g, ALL[b]);
      ASSERT_GPU_CLOSE(d, c, 0, 0);
      em_tensor_release(c), em_tensor_release(d);
    }
    em_tensor_release(g), em_tensor_release(x);
  }
  /* NaN and infinities into integers (saturate; NaN -> 0), as the CPU */
  double v[] = {NAN, INFINITY, -INFINITY, 1e30, -1e30, 2.5, -2.5};
  em_tensor *f = em_tensor_from_data(v, EM_DIMS(7), EM_FLOAT64);
  em_tensor *gf = g_to(f, GPU);
  for (int b = 0; b < N_OF(ALL); b++) {
    em_tensor *c = em_tensor_to_dtype(f, ALL[b]), *d = em_tensor_to_dtype(gf, ALL[b]);
    ASSERT_GPU_CLOSE(d, c, 0, 0);
    em_tensor_release(c), em_tensor_release(d);
  }
  em_tensor_release(gf), em_tensor_release(f);
}

EM_TEST(fill_and_copy_into_views) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(ALL); k++) {
    em_tensor *g = em_tensor_empty_on(EM_DIMS(4, 6), ALL[k], GPU);
    ASSERT_NOTNULL(g);
    ASSERT_OK(em_tensor_fill_(g, em_scalar_float(3.75)));
    em_tensor *c = em_tensor_full(EM_DIMS(4, 6), em_scalar_float(3.75), ALL[k]);
    ASSERT_GPU_CLOSE(g, c, 0, 0);
    /* copy_ into a strided view of a GPU tensor */
    em_tensor *gv = em_tensor_slice(g, 1, 0, INT64_MAX, 2), *cv = em_tensor_slice(c, 1, 0, INT64_MAX, 2);
    em_tensor *src = g_values(EM_DIMS(4, 3), EM_FLOAT64, -9, 9, 3);
    em_tensor *gsrc = g_to(src, GPU);
    ASSERT_OK(em_tensor_copy_(gv, gsrc));
    ASSERT_OK(em_tensor_copy_(cv, src));
    ASSERT_GPU_CLOSE(g, c, 0, 0);
    /* and across devices, both ways (load_state_dict into a GPU model) */
    em_tensor *back = em_tensor_empty(EM_DIMS(4, 6), ALL[k]);
    ASSERT_OK(em_tensor_copy_(back, g));
    ASSERT_GPU_CLOSE(g, back, 0, 0);
    ASSERT_OK(em_tensor_fill_(g, em_scalar_float(0)));
    ASSERT_OK(em_tensor_copy_(gv, src));
    ASSERT_GPU_CLOSE(g, c, 0, 0);
    em_tensor_release(back);
    em_tensor_release(gsrc), em_tensor_release(src), em_tensor_release(gv), em_tensor_release(cv);
    em_tensor_release(g), em_tensor_release(c);
  }
  em_tensor *e = em_tensor_empty_on(EM_DIMS(0), EM_FLOAT32, GPU);
  ASSERT_NOTNULL(e);
  em_tensor *z = em_tensor_zeros_like(e, EM_DTYPE_UNDEFINED);
  ASSERT_NOTNULL(z);
  em_tensor_release(z), em_tensor_release(e);
}

/* ---- unary ---------------------------------------------------------------------------- */

typedef struct uop {
  const char *name;
  unary_fn fn;
  double lo, hi;
} uop;

#define U_ENTRY(name) {#name, em_tensor_##name, -3, 3},
static uop uops[] = {EM_UNARY_OPS(U_ENTRY)};

static void domain(uop *u) {
  const char *n = u->name;
  if (!strcmp(n, "log") || !strcmp(n, "log2") || !strcmp(n, "log10") || !strcmp(n, "sqrt") ||
      !strcmp(n, "rsqrt") || !strcmp(n, "reciprocal"))
    u->lo = 0.1, u->hi = 5;
  else if (!strcmp(n, "log1p"))
    u->lo = -0.5, u->hi = 5;
  else if (!strcmp(n, "asin") || !strcmp(n, "acos"))
    u->lo = -0.95, u->hi = 0.95;
  else if (!strcmp(n, "tan"))
    u->lo = -1.2, u->hi = 1.2;
}

/* op on x (contiguous and transposed) on both devices. Ops without a
 * kernel for the dtype fail on both with the same status. */
static int check_unary(uop *u, em_dtype dt) {
  em_tensor *x = g_values(EM_DIMS(33, 17), dt, u->lo, u->hi, 11);
  em_tensor *xt = em_tensor_transpose(x, 0, 1);
  em_tensor *g = g_to(x, GPU), *gt = em_tensor_transpose(g, 0, 1);
  int ok = 1;
  for (int v = 0; v < 2 && ok; v++) {
    em_tensor *c = u->fn(v ? xt : x);
    em_status cst = em_last_status();
    em_tensor *r = u->fn(v ? gt : g);
    if (!c) {
      ok = !r;
      if (!ok) fprintf(stderr, "  %s(%s): CPU failed (%s) but GPU ran\n", u->name,
                       em_dtype_name(dt), em_status_name(cst));
    } else {
      double rt = g_rtol((em_dtype)c->dtype) * 4;
      ok = g_close(r, c, rt, rt * 1e-3, __FILE__, __LINE__, u->name);
    }
    em_tensor_release(c), em_tensor_release(r);
  }
  em_tensor_release(gt), em_tensor_release(g), em_tensor_release(xt), em_tensor_release(x);
  return ok;
}

EM_TEST(unary_ops_match_the_cpu) {
  REQUIRE_CUDA();
  for (int i = 0; i < N_OF(uops); i++) {
    domain(&uops[i]);
    for (int k = 0; k < N_OF(ALL); k++)
      if (!check_unary(&uops[i], ALL[k])) {
        EM_FAILF("%s(%s) differs", uops[i].name, em_dtype_name(ALL[k]));
        return;
      }
  }
}

EM_TEST(activations_with_parameters) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(FLOATS); k++) {
    em_dtype dt = FLOATS[k];
    double rt = g_rtol(dt) * 4;
    em_tensor *x = g_values(EM_DIMS(8, 64), dt, -6, 6, 5 + k), *g = g_to(x, GPU);
    em_tensor *c[9], *r[9];
    c[0] = em_tensor_leaky_relu(x, 0.1), r[0] = em_tensor_leaky_relu(g, 0.1);
    c[1] = em_tensor_gelu(x, false), r[1] = em_tensor_gelu(g, false);
    c[2] = em_tensor_gelu(x, true), r[2] = em_tensor_gelu(g, true);
    c[3] = em_tensor_softplus(x, 2, 5), r[3] = em_tensor_softplus(g, 2, 5);
    c[4] = em_tensor_elu(x, 1.5), r[4] = em_tensor_elu(g, 1.5);
    c[5] = em_tensor_hardtanh(x, -1, 2), r[5] = em_tensor_hardtanh(g, -1, 2);
    c[6] = em_tensor_clamp(x, true, -0.5, false, 0), r[6] = em_tensor_clamp(g, true, -0.5, false, 0);
    c[7] = em_tensor_pow_scalar(x, em_scalar_float(3)), r[7] = em_tensor_pow_scalar(g, em_scalar_float(3));
    c[8] = em_tensor_isfinite(x), r[8] = em_tensor_isfinite(g);
    for (int j = 0; j < 9; j++) ASSERT_GPU_CLOSE(r[j], c[j], rt, rt * 1e-3);
    for (int j = 0; j < 9; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
    em_tensor_release(g), em_tensor_release(x);
  }
  /* integer clamp and powers */
  em_tensor *x = g_values(EM_DIMS(50), EM_INT64, -9, 9, 3), *g = g_to(x, GPU);
  em_tensor *c1 = em_tensor_clamp(x, true, -2, true, 4), *r1 = em_tensor_clamp(g, true, -2, true, 4);
  em_tensor *c2 = em_tensor_pow_scalar(x, em_scalar_int(3)), *r2 = em_tensor_pow_scalar(g, em_scalar_int(3));
  em_tensor *c3 = em_tensor_rpow_scalar(em_scalar_int(2), x), *r3 = em_tensor_rpow_scalar(em_scalar_int(2), g);
  ASSERT_GPU_CLOSE(r1, c1, 0, 0);
  ASSERT_GPU_CLOSE(r2, c2, 0, 0);
  ASSERT_GPU_CLOSE(r3, c3, 0, 0);
  em_tensor_release(c1), em_tensor_release(r1), em_tensor_release(c2), em_tensor_release(r2);
  em_tensor_release(c3), em_tensor_release(r3), em_tensor_release(g), em_tensor_release(x);
}

/* ---- binary ------------------------------------------------------------------------------------ */

typedef struct bop {
  const char *name;
  binary_fn fn;
} bop;
#define B_ENTRY(name) {#name, em_tensor_##name},
static bop bops[] = {EM_BINARY_OPS(B_ENTRY) EM_COMPARE_OPS(B_ENTRY)};

EM_TEST(binary_ops_match_the_cpu_with_broadcasting) {
  REQUIRE_CUDA();
  for (int i = 0; i < N_OF(bops); i++) {
    const char *n = bops[i].name;
    bool divlike = strstr(n, "div") || !strcmp(n, "remainder") || !strcmp(n, "fmod");
    bool pw = !strcmp(n, "pow");
    for (int k = 0; k < N_OF(ALL); k++) {
      em_dtype dt = ALL[k];
      bool fl = em_dtype_is_float(dt);
      /* a [7, 1, 5] and b [4, 5] broadcast to [7, 4, 5]; b is a transposed view */
      em_tensor *a = g_values(EM_DIMS(7, 1, 5), dt, pw && fl ? 0.5 : -20, pw && fl ? 3 : 20, 1 + k);
      em_tensor *bb = g_values(EM_DIMS(5, 4), dt, divlike || pw ? 1 : -20, pw ? 4 : 20, 2 + k);
      em_tensor *b = em_tensor_transpose(bb, 0, 1);
      em_tensor *ga = g_to(a, GPU), *gbb = g_to(bb, GPU), *gb = em_tensor_transpose(gbb, 0, 1);
      em_tensor *c = bops[i].fn(a, b);
      em_status cst = em_last_status();
      em_tensor *r = bops[i].fn(ga, gb);
      if (!c) {
        if (r) {
          EM_FAILF("%s(%s): CPU failed (%s) but GPU ran", n, em_dtype_name(dt), em_status_name(cst));
          return;
        }
      } else {
        double rt = g_rtol((em_dtype)c->dtype) * 4;
        if (!g_close(r, c, rt, rt * 1e-3, __FILE__, __LINE__, n)) {
          EM_FAILF("%s(%s) differs", n, em_dtype_name(dt));
          return;
        }
      }
      em_tensor_release(c), em_tensor_release(r);
      em_tensor_release(gb), em_tensor_release(gbb), em_tensor_release(ga);
      em_tensor_release(b), em_tensor_release(bb), em_tensor_release(a);
    }
  }
}

EM_TEST(scalars_and_mixed_dtypes_join_gpu_ops) {
  REQUIRE_CUDA();
  em_tensor *x = g_values(EM_DIMS(3, 4), EM_INT32, -5, 5, 9), *g = g_to(x, GPU);
  /* a Python float promotes int32 to float32; the wrapped number lives on the CPU */
  em_tensor *c = em_tensor_mul_scalar(x, em_scalar_float(1.5)), *r = em_tensor_mul_scalar(g, em_scalar_float(1.5));
  ASSERT_GPU_CLOSE(r, c, 0, 0);
  ASSERT_TRUE(em_device_eq(r->device, GPU));
  em_tensor_release(c), em_tensor_release(r);
  em_tensor *c2 = em_tensor_add_alpha(x, x, em_scalar_int(3)), *r2 = em_tensor_add_alpha(g, g, em_scalar_int(3));
  ASSERT_GPU_CLOSE(r2, c2, 0, 0);
  em_tensor_release(c2), em_tensor_release(r2);
  /* a CPU 0-dim tensor (not a wrapped number) joins as well */
  em_tensor *s = em_tensor_scalar(em_scalar_float(2), EM_FLOAT64);
  em_tensor *c3 = em_tensor_sub(x, s), *r3 = em_tensor_sub(g, s);
  ASSERT_GPU_CLOSE(r3, c3, 0, 0);
  /* in place, with promotion checks as on the CPU */
  em_tensor *f = em_tensor_to_dtype(g, EM_FLOAT32), *fc = em_tensor_to_dtype(x, EM_FLOAT32);
  ASSERT_OK(em_tensor_div_(f, s));
  ASSERT_OK(em_tensor_div_(fc, s));
  ASSERT_GPU_CLOSE(f, fc, 0, 0);
  ASSERT_ERR(em_tensor_div_(g, s), EM_ERR_DTYPE, "can't be cast");
  em_tensor_release(f), em_tensor_release(fc), em_tensor_release(c3), em_tensor_release(r3);
  em_tensor_release(s), em_tensor_release(g), em_tensor_release(x);
}

/* ---- ternary ---------------------------------------------------------------------------------- */

EM_TEST(ternary_ops_match_the_cpu) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(FLOATS); k++) {
    em_dtype dt = FLOATS[k];
    double rt = g_rtol(dt) * 4;
    em_tensor *a = g_values(EM_DIMS(6, 5), dt, -2, 2, 1), *b = g_values(EM_DIMS(5), dt, -2, 2, 2);
    em_tensor *w = g_values(EM_DIMS(6, 5), dt, -1, 1.5, 3), *d = g_values(EM_DIMS(6, 1), dt, 0.5, 2, 4);
    em_tensor *m = g_values(EM_DIMS(6, 5), EM_BOOL, 0, 1, 5);
    em_tensor *ga = g_to(a, GPU), *gb = g_to(b, GPU), *gw = g_to(w, GPU), *gd = g_to(d, GPU), *gm = g_to(m, GPU);
    em_tensor *c[5], *r[5];
    c[0] = em_tensor_where(m, a, b), r[0] = em_tensor_where(gm, ga, gb);
    c[1] = em_tensor_lerp(a, b, w), r[1] = em_tensor_lerp(ga, gb, gw);
    c[2] = em_tensor_lerp_scalar(a, b, 0.75), r[2] = em_tensor_lerp_scalar(ga, gb, 0.75);
    c[3] = em_tensor_addcmul(a, w, d, em_scalar_float(0.5)), r[3] = em_tensor_addcmul(ga, gw, gd, em_scalar_float(0.5));
    c[4] = em_tensor_addcdiv(a, w, d, em_scalar_float(-2)), r[4] = em_tensor_addcdiv(ga, gw, gd, em_scalar_float(-2));
    for (int j = 0; j < 5; j++) ASSERT_GPU_CLOSE(r[j], c[j], rt, rt * 1e-3);
    for (int j = 0; j < 5; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
    em_tensor *all[] = {a, b, w, d, m, ga, gb, gw, gd, gm};
    for (int j = 0; j < 10; j++) em_tensor_release(all[j]);
  }
  em_tensor *a = g_values(EM_DIMS(9), EM_INT64, -9, 9, 1), *ga = g_to(a, GPU);
  em_tensor *c = em_tensor_addcmul(a, a, a, em_scalar_int(3)), *r = em_tensor_addcmul(ga, ga, ga, em_scalar_int(3));
  ASSERT_GPU_CLOSE(r, c, 0, 0);
  em_tensor_release(c), em_tensor_release(r), em_tensor_release(ga), em_tensor_release(a);
}

/* ---- reductions --------------------------------------------------------------------------------- */

typedef em_tensor *(*red_fn)(em_tensor *t, int ndims, const int64_t *dims, bool keepdim);
static em_tensor *r_sum(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_sum(t, n, d, k, EM_DTYPE_UNDEFINED); }
static em_tensor *r_mean(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_mean(t, n, d, k, EM_DTYPE_UNDEFINED); }
static em_tensor *r_prod(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_prod(t, n, d, k, EM_DTYPE_UNDEFINED); }
static em_tensor *r_var(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_var(t, n, d, 1, k); }
static em_tensor *r_std0(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_std(t, n, d, 0, k); }
static em_tensor *r_norm2(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_norm(t, 2, n, d, k); }
static em_tensor *r_norm1(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_norm(t, 1, n, d, k); }
static em_tensor *r_norminf(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_norm(t, INFINITY, n, d, k); }
static em_tensor *r_norm3(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_norm(t, 3, n, d, k); }
static em_tensor *r_cnt(em_tensor *t, int n, const int64_t *d, bool k) { return em_tensor_count_nonzero(t, n, d); }

static const struct {
  const char *name;
  red_fn fn;
} reds[] = {{"sum", r_sum},     {"mean", r_mean},       {"prod", r_prod},         {"amax", em_tensor_amax},
            {"amin", em_tensor_amin}, {"all", em_tensor_all}, {"any", em_tensor_any}, {"var", r_var},
            {"std", r_std0},    {"norm2", r_norm2},     {"norm1", r_norm1},       {"norminf", r_norminf},
            {"norm3", r_norm3}, {"logsumexp", em_tensor_logsumexp}, {"count_nonzero", r_cnt}};

EM_TEST(reductions_match_the_cpu) {
  REQUIRE_CUDA();
  const int64_t d1[] = {1}, d02[] = {0, 2}, dlast[] = {-1};
  struct {
    int n;
    const int64_t *d;
  } dimsets[] = {{0, NULL}, {1, d1}, {2, d02}, {1, dlast}};
  for (int r = 0; r < N_OF(reds); r++)
    for (int k = 0; k < N_OF(ALL); k++) {
      em_dtype dt = ALL[k];
      bool narrow = !strcmp(reds[r].name, "prod");
      em_tensor *x = g_values(EM_DIMS(6, 35, 9), dt, narrow ? 0.5 : -4, narrow ? 1.5 : 4, 3 + k);
      em_tensor *xp = em_tensor_permute(x, EM_DIMS(2, 0, 1)); /* strided */
      em_tensor *g = g_to(x, GPU), *gp = em_tensor_permute(g, EM_DIMS(2, 0, 1));
      for (int s = 0; s < N_OF(dimsets); s++)
        for (int v = 0; v < 2; v++)
          for (int keep = 0; keep < 2; keep++) {
            em_tensor *c = reds[r].fn(v ? xp : x, dimsets[s].n, dimsets[s].d, keep);
            em_status cst = em_last_status();
            em_tensor *o = reds[r].fn(v ? gp : g, dimsets[s].n, dimsets[s].d, keep);
            if (!c) {
              if (o) {
                EM_FAILF("%s(%s): CPU failed (%s), GPU ran", reds[r].name, em_dtype_name(dt), em_status_name(cst));
                return;
              }
              continue;
            }
            double rt = em_dtype_is_float((em_dtype)c->dtype) ? g_rtol((em_dtype)c->dtype) * 8 : 0;
            if (!g_close(o, c, rt, rt * 1e-2, __FILE__, __LINE__, reds[r].name)) {
              EM_FAILF("%s(%s) dims set %d view %d keepdim %d differs", reds[r].name, em_dtype_name(dt), s, v, keep);
              return;
            }
            em_tensor_release(c), em_tensor_release(o);
          }
      em_tensor_release(gp), em_tensor_release(g), em_tensor_release(xp), em_tensor_release(x);
    }
}

EM_TEST(large_and_empty_reductions) {
  REQUIRE_CUDA();
  /* many elements into one output (the split path) and into a few */
  em_tensor *x = g_values(EM_DIMS(3, 400000), EM_FLOAT32, -1, 1, 21), *g = g_to(x, GPU);
  const int64_t d1[] = {1};
  em_tensor *c[4], *r[4];
  c[0] = em_tensor_sum(x, 0, NULL, false, EM_DTYPE_UNDEFINED), r[0] = em_tensor_sum(g, 0, NULL, false, EM_DTYPE_UNDEFINED);
  c[1] = em_tensor_var(x, 1, d1, 1, false), r[1] = em_tensor_var(g, 1, d1, 1, false);
  c[2] = em_tensor_argmax(x, false, 0, false), r[2] = em_tensor_argmax(g, false, 0, false);
  c[3] = em_tensor_logsumexp(x, 1, d1, true), r[3] = em_tensor_logsumexp(g, 1, d1, true);
  for (int j = 0; j < 4; j++) ASSERT_GPU_CLOSE(r[j], c[j], 1e-4, 1e-4);
  for (int j = 0; j < 4; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
  em_tensor_release(g), em_tensor_release(x);
  /* argmax's 16-byte partials on the split path (few outputs, long rows),
   * with a guard tensor allocated right after the scratch */
  x = g_values(EM_DIMS(200, 65536), EM_FLOAT32, -1, 1, 22), g = g_to(x, GPU);
  for (int rep = 0; rep < 3; rep++) {
    em_tensor *ca = em_tensor_argmax(x, true, 1, false), *ga = em_tensor_argmax(g, true, 1, false);
    em_tensor *guard = em_tensor_empty_on(EM_DIMS(4096), EM_FLOAT32, GPU);
    ASSERT_OK(em_tensor_fill_(guard, em_scalar_float(7)));
    em_tensor *ga2 = em_tensor_argmax(g, true, 1, false);
    em_tensor *want = em_tensor_full(EM_DIMS(4096), em_scalar_float(7), EM_FLOAT32);
    ASSERT_GPU_CLOSE(ga, ca, 0, 0);
    ASSERT_GPU_CLOSE(ga2, ca, 0, 0);
    ASSERT_GPU_CLOSE(guard, want, 0, 0);
    em_tensor_release(ca), em_tensor_release(ga), em_tensor_release(ga2);
    em_tensor_release(guard), em_tensor_release(want);
  }
  em_tensor_release(g), em_tensor_release(x);
  /* reducing an empty dim gives the identity */
  em_tensor *e = em_tensor_empty_on(EM_DIMS(3, 0), EM_FLOAT32, GPU), *ec = em_tensor_empty(EM_DIMS(3, 0), EM_FLOAT32);
  em_tensor *s = em_tensor_sum(e, 1, d1, false, EM_DTYPE_UNDEFINED), *sc = em_tensor_sum(ec, 1, d1, false, EM_DTYPE_UNDEFINED);
  em_tensor *p = em_tensor_prod(e, 1, d1, false, EM_DTYPE_UNDEFINED), *pc = em_tensor_prod(ec, 1, d1, false, EM_DTYPE_UNDEFINED);
  em_tensor *m = em_tensor_mean(e, 1, d1, false, EM_DTYPE_UNDEFINED), *mc = em_tensor_mean(ec, 1, d1, false, EM_DTYPE_UNDEFINED);
  ASSERT_GPU_CLOSE(s, sc, 0, 0);
  ASSERT_GPU_CLOSE(p, pc, 0, 0);
  ASSERT_GPU_CLOSE(m, mc, 0, 0);
  ASSERT_NULL_ERR(em_tensor_amax(e, 1, d1, false), EM_ERR_INDEX, "non-zero size");
  em_tensor_release(s), em_tensor_release(sc), em_tensor_release(p), em_tensor_release(pc);
  em_tensor_release(m), em_tensor_release(mc), em_tensor_release(e), em_tensor_release(ec);
}

EM_TEST(max_min_with_indices_and_nan) {
  REQUIRE_CUDA();
  double v[] = {1, 5, 5, -2, NAN, 3, 7, 7, 0, -1, -1, 4};
  em_tensor *x = em_tensor_from_data(v, EM_DIMS(3, 4), EM_FLOAT64), *g = g_to(x, GPU);
  for (int dim = 0; dim < 2; dim++) {
    em_tensor *cv, *ci, *gv, *gi;
    ASSERT_OK(em_tensor_max_dim(x, dim, false, &cv, &ci));
    ASSERT_OK(em_tensor_max_dim(g, dim, false, &gv, &gi));
    ASSERT_GPU_CLOSE(gv, cv, 0, 0);
    ASSERT_GPU_CLOSE(gi, ci, 0, 0);
    em_tensor_release(cv), em_tensor_release(ci), em_tensor_release(gv), em_tensor_release(gi);
    ASSERT_OK(em_tensor_min_dim(x, dim, true, &cv, &ci));
    ASSERT_OK(em_tensor_min_dim(g, dim, true, &gv, &gi));
    ASSERT_GPU_CLOSE(gv, cv, 0, 0);
    ASSERT_GPU_CLOSE(gi, ci, 0, 0);
    em_tensor_release(cv), em_tensor_release(ci), em_tensor_release(gv), em_tensor_release(gi);
    em_tensor *ca = em_tensor_argmin(x, true, dim, false), *ga = em_tensor_argmin(g, true, dim, false);
    ASSERT_GPU_CLOSE(ga, ca, 0, 0);
    em_tensor_release(ca), em_tensor_release(ga);
  }
  em_tensor *cm = em_tensor_max_all(x), *gm = em_tensor_max_all(g);
  ASSERT_GPU_CLOSE(gm, cm, 0, 0); /* NaN */
  em_tensor_release(cm), em_tensor_release(gm), em_tensor_release(g), em_tensor_release(x);
}

EM_TEST(softmax_and_scans_match_the_cpu) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(FLOATS); k++) {
    em_dtype dt = FLOATS[k];
    double rt = g_rtol(dt) * 8;
    em_tensor *x = g_values(EM_DIMS(4, 50, 300), dt, -8, 8, 31 + k), *g = g_to(x, GPU);
    for (int dim = -1; dim < 3; dim++) {
      em_tensor *c[4], *r[4];
      c[0] = em_tensor_softmax(x, dim, EM_DTYPE_UNDEFINED), r[0] = em_tensor_softmax(g, dim, EM_DTYPE_UNDEFINED);
      c[1] = em_tensor_log_softmax(x, dim, EM_DTYPE_UNDEFINED), r[1] = em_tensor_log_softmax(g, dim, EM_DTYPE_UNDEFINED);
      c[2] = em_tensor_cumsum(x, dim, EM_FLOAT64), r[2] = em_tensor_cumsum(g, dim, EM_FLOAT64);
      c[3] = em_tensor_softmax(x, dim, EM_FLOAT64), r[3] = em_tensor_softmax(g, dim, EM_FLOAT64);
      for (int j = 0; j < 4; j++) ASSERT_GPU_CLOSE(r[j], c[j], rt, rt * 1e-2);
      for (int j = 0; j < 4; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
    }
    em_tensor_release(g), em_tensor_release(x);
  }
  em_tensor *i = g_values(EM_DIMS(5, 6), EM_INT32, -3, 3, 2), *gi = g_to(i, GPU);
  em_tensor *c = em_tensor_cumsum(i, 1, EM_DTYPE_UNDEFINED), *r = em_tensor_cumsum(gi, 1, EM_DTYPE_UNDEFINED);
  em_tensor *c2 = em_tensor_cumprod(i, 0, EM_DTYPE_UNDEFINED), *r2 = em_tensor_cumprod(gi, 0, EM_DTYPE_UNDEFINED);
  ASSERT_GPU_CLOSE(r, c, 0, 0);
  ASSERT_GPU_CLOSE(r2, c2, 0, 0);
  em_tensor_release(c), em_tensor_release(r), em_tensor_release(c2), em_tensor_release(r2);
  em_tensor_release(gi), em_tensor_release(i);
}

/* ---- shape --------------------------------------------------------------------------------------- */

EM_TEST(cat_stack_repeat_flip_pad) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(ALL); k++) {
    em_dtype dt = ALL[k];
    em_tensor *a = g_values(EM_DIMS(3, 4), dt, -9, 9, 1), *b = g_values(EM_DIMS(4, 2), dt, -9, 9, 2);
    em_tensor *bt = em_tensor_transpose(b, 0, 1); /* [2, 4], strided */
    em_tensor *ga = g_to(a, GPU), *gb = g_to(b, GPU), *gbt = em_tensor_transpose(gb, 0, 1);
    em_tensor *c[6], *r[6];
    c[0] = em_tensor_cat(2, (em_tensor *[]){a, bt}, 0), r[0] = em_tensor_cat(2, (em_tensor *[]){ga, gbt}, 0);
    c[1] = em_tensor_cat(3, (em_tensor *[]){a, a, a}, 1), r[1] = em_tensor_cat(3, (em_tensor *[]){ga, ga, ga}, 1);
    c[2] = em_tensor_stack(2, (em_tensor *[]){a, a}, 1), r[2] = em_tensor_stack(2, (em_tensor *[]){ga, ga}, 1);
    c[3] = em_tensor_repeat(bt, EM_DIMS(2, 1, 3)), r[3] = em_tensor_repeat(gbt, EM_DIMS(2, 1, 3));
    c[4] = em_tensor_flip(a, EM_DIMS(0, 1)), r[4] = em_tensor_flip(ga, EM_DIMS(0, 1));
    c[5] = em_tensor_pad(a, EM_DIMS(1, 2, -1, 0), 7), r[5] = em_tensor_pad(ga, EM_DIMS(1, 2, -1, 0), 7);
    for (int j = 0; j < 6; j++) ASSERT_GPU_CLOSE(r[j], c[j], 0, 0);
    for (int j = 0; j < 6; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
    em_tensor *all[] = {a, b, bt, ga, gb, gbt};
    for (int j = 0; j < 6; j++) em_tensor_release(all[j]);
  }
}

/* ---- matmul ----------------------------------------------------------------------------------- */

EM_TEST(matmul_family_matches_the_cpu) {
  REQUIRE_CUDA();
  for (int k = 0; k < N_OF(FLOATS); k++) {
    em_dtype dt = FLOATS[k];
    double rt = dt == EM_FLOAT64 ? 1e-12 : dt == EM_FLOAT32 ? 1e-4 : dt == EM_FLOAT16 ? 1e-2 : 5e-2;
    em_tensor *a = g_values(EM_DIMS(33, 70), dt, -1, 1, 1), *b = g_values(EM_DIMS(70, 19), dt, -1, 1, 2);
    em_tensor *bt = g_values(EM_DIMS(19, 70), dt, -1, 1, 3);
    em_tensor *b3 = g_values(EM_DIMS(4, 70, 19), dt, -1, 1, 4), *a3 = g_values(EM_DIMS(4, 33, 70), dt, -1, 1, 5);
    em_tensor *v = g_values(EM_DIMS(70), dt, -1, 1, 6), *in = g_values(EM_DIMS(19), dt, -1, 1, 7);
    em_tensor *ga = g_to(a, GPU), *gb = g_to(b, GPU), *gbt = g_to(bt, GPU), *gb3 = g_to(b3, GPU),
              *ga3 = g_to(a3, GPU), *gv = g_to(v, GPU), *gin = g_to(in, GPU);
    em_tensor *tb = em_tensor_t(bt), *gtb = em_tensor_t(gbt);         /* [70, 19], column-major */
    em_tensor *c[8], *r[8];
    c[0] = em_tensor_mm(a, b), r[0] = em_tensor_mm(ga, gb);
    c[1] = em_tensor_mm(a, tb), r[1] = em_tensor_mm(ga, gtb);
    c[2] = em_tensor_bmm(a3, b3), r[2] = em_tensor_bmm(ga3, gb3);
    c[3] = em_tensor_matmul(a, b3), r[3] = em_tensor_matmul(ga, gb3); /* broadcast batch */
    c[4] = em_tensor_mv(a, v), r[4] = em_tensor_mv(ga, gv);
    c[5] = em_tensor_dot(v, v), r[5] = em_tensor_dot(gv, gv);
    c[6] = em_tensor_addmm(in, a, b, 0.5, -2), r[6] = em_tensor_addmm(gin, ga, gb, 0.5, -2);
    c[7] = em_tensor_outer(v, in), r[7] = em_tensor_outer(gv, gin);
    for (int j = 0; j < 8; j++) ASSERT_GPU_CLOSE(r[j], c[j], rt, rt);
    for (int j = 0; j < 8; j++) em_tensor_release(c[j]), em_tensor_release(r[j]);
    em_tensor *all[] = {a, b, bt, b3, a3, v, in, ga, gb, gbt, gb3, ga3, gv, gin, tb, gtb};
    for (int j = 0; j < 16; j++) em_tensor_release(all[j]);
  }
}

EM_TEST(matmul_precision_settings_and_errors) {
  REQUIRE_CUDA();
  em_tensor *a = g_values(EM_DIMS(64, 256), EM_FLOAT32, -1, 1, 1), *b = g_values(EM_DIMS(256, 32), EM_FLOAT32, -1, 1, 2);
  em_tensor *ga = g_to(a, GPU), *gb = g_to(b, GPU), *c = em_tensor_mm(a, b);
  ASSERT_STREQ(em_cuda_get_float32_matmul_precision(), "highest");
  const char *modes[] = {"high", "medium"};
  for (int m = 0; m < 2; m++) {
    ASSERT_OK(em_cuda_set_float32_matmul_precision(modes[m]));
    em_tensor *r = em_tensor_mm(ga, gb);
    ASSERT_GPU_CLOSE(r, c, 3e-2, 5e-2); /* TF32 / bf16 products */
    em_tensor_release(r);
  }
  ASSERT_OK(em_cuda_set_float32_matmul_precision("highest"));
  ASSERT_ERR(em_cuda_set_float32_matmul_precision("fast"), EM_ERR_INVALID, "expected \"highest\"");
  /* integer matmul has no CUDA kernel (as in PyTorch) */
  em_tensor *i = em_tensor_ones_like(ga, EM_INT64);
  ASSERT_NOTNULL(i);
  em_tensor *it = em_tensor_t(i);
  ASSERT_NULL_ERR(em_tensor_mm(i, it), EM_ERR_NOTIMPL, "no kernel for cuda/int64");
  em_tensor_release(it), em_tensor_release(i);
  em_tensor_release(c), em_tensor_release(gb), em_tensor_release(ga), em_tensor_release(b), em_tensor_release(a);
}

/* ---- what has no CUDA kernel yet fails cleanly ---------------------------------------------------- */

EM_TEST(ops_without_cuda_kernels_fail_cleanly) {
  REQUIRE_CUDA();
  em_tensor *g = em_tensor_empty_on(EM_DIMS(4), EM_FLOAT32, GPU);
  ASSERT_NOTNULL(g);
  ASSERT_OK(em_tensor_zero_(g));
  /* random numbers: no device generator */
  em_clear_error();
  em_tensor *r = em_tensor_rand_like(g, EM_DTYPE_UNDEFINED, NULL);
  if (r) {
    em_tensor_release(r); /* a later build may have one */
  } else {
    ASSERT_TRUE(strstr(em_last_error(), "cuda") != NULL);
  }
  /* indexing: the front end reads indices on the host; either it works or
   * it says so */
  int64_t iv[] = {3, 0};
  em_tensor *idx = em_tensor_from_data(iv, EM_DIMS(2), EM_INT64), *gi = g_to(idx, GPU);
  em_clear_error();
  em_tensor *s = em_tensor_index_select(g, 0, gi);
  if (!s)
    ASSERT_TRUE(em_last_status() == EM_ERR_NOTIMPL && strstr(em_last_error(), "cuda:0"));
  em_tensor_release(s), em_tensor_release(gi), em_tensor_release(idx), em_tensor_release(g);
}

EM_TEST_MAIN()
