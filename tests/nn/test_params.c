/* params: the flat buffer's views, deterministic initialisers with the right
 * statistics, and the dense optimizers against closed forms. */
#include "worker/nn/params.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/check.h"

static void test_views_are_flat_aligned_and_named(void **state) {
  (void)state;
  struct params *p = params_new();
  int w = params_add(p, "mlp.0.weight", 1, 400, 39 * 16, PARAMS_XAVIER_NORMAL,
                     1.0f);
  int b = params_add(p, "mlp.0.bias", 1, 1, 400, PARAMS_ZEROS, 0);
  int g = params_add(p, "ln.gamma", 1, 1, 5, PARAMS_ONES, 0);
  int rm = params_add_state(p, "bn.run_var", 1, 1, 3, PARAMS_CONST, 1.0f);
  assert_int_equal(w, 0);
  assert_int_equal(rm, 3);
  assert_int_equal(params_find(p, "ln.gamma"), g);
  assert_int_equal(params_find(p, "nope"), -1);
  params_alloc(p, 7);
  size_t end = 0;
  for (int i = 0; i < p->count; i++) {
    const struct params_view *v = params_view(p, i);
    assert_int_equal(v->off % 16, 0);
    assert_true(v->off >= end); /* disjoint, in order */
    end = v->off + v->n;
    assert_ptr_equal(params_value(p, i), p->values + v->off);
    assert_ptr_equal(params_grad(p, i), p->grads + v->off);
  }
  assert_true(end <= p->len && p->len - end < 16);
  assert_int_equal(params_view(p, w)->n, 400 * 39 * 16);
  for (int i = 0; i < 400; i++)
    assert_float_equal(params_value(p, b)[i], 0.0f, 0.0f);
  for (int i = 0; i < 5; i++)
    assert_float_equal(params_value(p, g)[i], 1.0f, 0.0f);
  assert_float_equal(params_value(p, rm)[2], 1.0f, 0.0f);
  /* padding between views is zero */
  assert_float_equal(p->values[params_view(p, g)->off + 5], 0.0f, 0.0f);
  params_free(p);
  params_free(NULL);
}

static void moments(const float *x, size_t n, double *mean, double *sd) {
  double s = 0, ss = 0;
  for (size_t i = 0; i < n; i++)
    s += x[i];
  *mean = s / n;
  for (size_t i = 0; i < n; i++)
    ss += (x[i] - *mean) * (x[i] - *mean);
  *sd = sqrt(ss / n);
}

static void test_init_statistics(void **state) {
  (void)state;
  struct params *p = params_new();
  /* 200 x 300 = 60000 samples each: the sample sd of a normal is within
   * sd * 4 / sqrt(2n) = 1.2% (4 sigma), the mean within 4 sd / sqrt(n). */
  int xn = params_add(p, "xn", 1, 200, 300, PARAMS_XAVIER_NORMAL, 1.0f);
  int xu = params_add(p, "xu", 1, 200, 300, PARAMS_XAVIER_UNIFORM, 2.0f);
  int nr = params_add(p, "emb_like", 1, 200, 300, PARAMS_NORMAL, 1e-4f);
  int st = params_add(p, "experts", 4, 10, 30, PARAMS_XAVIER_NORMAL, 1.0f);
  params_alloc(p, 2026);
  double m, sd, n = 60000;
  moments(params_value(p, xn), 60000, &m, &sd);
  double want = sqrt(2.0 / 500);
  assert_true(fabs(m) < 4 * want / sqrt(n));
  assert_true(fabs(sd / want - 1) < 0.012);
  moments(params_value(p, xu), 60000, &m, &sd);
  double a = 2.0 * sqrt(6.0 / 500); /* U(-a, a): sd a/sqrt(3) */
  assert_true(fabs(sd / (a / sqrt(3.0)) - 1) < 0.012);
  for (int i = 0; i < 60000; i++)
    assert_true(fabsf(params_value(p, xu)[i]) <= a);
  moments(params_value(p, nr), 60000, &m, &sd);
  assert_true(fabs(sd / 1e-4 - 1) < 0.012);
  /* a stack of 4 (10, 30) matrices: the fan is one matrix's (10 + 30) */
  moments(params_value(p, st), 1200, &m, &sd);
  assert_true(fabs(sd / sqrt(2.0 / 40) - 1) < 0.1); /* n = 1200: 4 sd ~ 8% */
  params_free(p);
}

static void test_init_deterministic_by_name(void **state) {
  (void)state;
  struct params *a = params_new(), *b = params_new(), *c = params_new();
  params_add(a, "w", 1, 8, 8, PARAMS_XAVIER_UNIFORM, 1.0f);
  params_add(b, "other", 1, 3, 3, PARAMS_NORMAL, 1.0f); /* shifts offsets */
  params_add(b, "w", 1, 8, 8, PARAMS_XAVIER_UNIFORM, 1.0f);
  params_add(c, "w", 1, 8, 8, PARAMS_XAVIER_UNIFORM, 1.0f);
  params_alloc(a, 1);
  params_alloc(b, 1);
  params_alloc(c, 2);
  assert_memory_equal(params_value(a, 0), params_value(b, 1), 64 * 4);
  assert_memory_not_equal(params_value(a, 0), params_value(c, 0), 64 * 4);
  float keep[64];
  memcpy(keep, params_value(a, 0), sizeof(keep));
  params_value(a, 0)[3] = 42;
  params_init_values(a, 1);
  assert_memory_equal(params_value(a, 0), keep, sizeof(keep));
  params_free(a);
  params_free(b);
  params_free(c);
}

/* A tensor w of 4 entries with constant gradient g, plus a state tensor that
 * must never move. */
static struct params *small(const float *w0) {
  struct params *p = params_new();
  params_add(p, "w", 1, 1, 4, PARAMS_ZEROS, 0);
  params_add_state(p, "run", 1, 1, 2, PARAMS_CONST, 3.0f);
  params_alloc(p, 1);
  memcpy(params_value(p, 0), w0, 4 * sizeof(float));
  return p;
}

static void test_adam_constant_gradient_closed_form(void **state) {
  (void)state;
  const float w0[4] = {1.0f, -0.5f, 0.25f, 2.0f};
  const float g[4] = {0.5f, -2.0f, 1e-3f, 0.0f};
  struct params *p = small(w0);
  struct params_adam cfg = params_adam_default(1e-3f);
  const int N = 100;
  for (int s = 0; s < N; s++) {
    params_zero_grad(p);
    memcpy(params_grad(p, 0), g, sizeof(g));
    params_grad(p, 1)[0] = 5.0f; /* a state tensor's grad is ignored */
    params_adam_step(p, &cfg);
  }
  assert_int_equal(p->step, N);
  /* With a constant g, m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so the
   * bias-corrected step is lr * g / (|g| + eps) every time:
   * w_N = w0 - N lr g / (|g| + eps). Float rounding of 100 updates to a w
   * of size ~1 stays below 100 ulp(2) = 2.4e-5: tolerance 3e-5. */
  for (int i = 0; i < 4; i++) {
    double want = w0[i] - N * 1e-3 * g[i] / (fabs(g[i]) + 1e-8);
    if (fabs(params_value(p, 0)[i] - want) > 3e-5)
      fail_msg("w[%d] = %.8g after %d steps, closed form %.8g", i,
               params_value(p, 0)[i], N, want);
  }
  assert_float_equal(params_value(p, 1)[0], 3.0f, 0.0f);
  params_free(p);
}

static void
test_adam_matches_torch_formula_with_varying_gradients(void **state) {
  (void)state;
  /* torch.optim.Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
   * written out in double, against the float implementation. */
  const float w0[4] = {0.3f, -1.0f, 0.0f, 4.0f};
  struct params *p = small(w0);
  struct params_adam cfg = {.lr = 0.01f,
                            .beta1 = 0.8f,
                            .beta2 = 0.99f,
                            .eps = 1e-6f,
                            .weight_decay = 0.1f};
  double w[4], m[4] = {0}, v[4] = {0};
  for (int i = 0; i < 4; i++)
    w[i] = w0[i];
  for (int t = 1; t <= 7; t++) {
    params_zero_grad(p);
    for (int i = 0; i < 4; i++) {
      float gi = (float)sin(3.0 * t + i) * (i + 1);
      params_grad(p, 0)[i] = gi;
      double gg = gi + 0.1 * w[i];
      m[i] = 0.8 * m[i] + 0.2 * gg;
      v[i] = 0.99 * v[i] + 0.01 * gg * gg;
      double bc1 = 1 - pow(0.8, t), bc2 = 1 - pow(0.99, t);
      w[i] -= 0.01 / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + 1e-6);
    }
    params_adam_step(p, &cfg);
  }
  for (int i = 0; i < 4; i++)
    assert_true(fabs(params_value(p, 0)[i] - w[i]) < 1e-5);
  params_free(p);
}

static void test_sgd_closed_form(void **state) {
  (void)state;
  const float w0[4] = {1.0f, -0.5f, 0.25f, 2.0f};
  const float g[4] = {0.5f, -2.0f, 1e-3f, 8.0f};
  struct params *p = small(w0);
  const int N = 50;
  const float lr = 0.01f;
  for (int s = 0; s < N; s++) {
    memcpy(params_grad(p, 0), g, sizeof(g));
    params_grad(p, 1)[1] = 1.0f;
    params_sgd_step(p, lr);
  }
  for (int i = 0; i < 4; i++) /* w0 - N lr g, to 50 float roundings */
    assert_true(fabs(params_value(p, 0)[i] - (w0[i] - N * 0.01 * g[i])) < 2e-5);
  assert_float_equal(params_value(p, 1)[1], 3.0f, 0.0f);
  params_free(p);
}

static void test_clip_grad_norm(void **state) {
  (void)state;
  struct params *p = params_new();
  int a = params_add(p, "a", 1, 1, 2, PARAMS_ZEROS, 0);
  int b = params_add(p, "b", 1, 2, 3, PARAMS_XAVIER_NORMAL, 1.0f);
  int s = params_add_state(p, "s", 1, 1, 1, PARAMS_ZEROS, 0);
  params_alloc(p, 3);
  /* norms: a = (3, 4), b = (0, 0, 12, 0, 0, 0): total 13 */
  params_grad(p, a)[0] = 3, params_grad(p, a)[1] = 4;
  params_grad(p, b)[2] = 12;
  params_grad(p, s)[0] = 1000; /* a state tensor is outside the norm */
  assert_true(fabs(params_clip_grad_norm(p, 20.0) - 13.0) < 1e-12);
  assert_float_equal(params_grad(p, a)[0], 3.0f, 0.0f); /* under: untouched */
  assert_true(fabs(params_clip_grad_norm(p, 1.0) - 13.0) < 1e-12);
  double ss = 0;
  for (size_t i = 0; i < p->len; i++)
    if (i != params_view(p, s)->off)
      ss += (double)p->grads[i] * p->grads[i];
  /* torch's coef max / (norm + 1e-6): the norm lands 1e-6/13 below 1 */
  assert_true(fabs(sqrt(ss) - 1.0) < 1e-6);
  assert_true(fabs(params_grad(p, b)[2] - 12.0 / 13.0) < 1e-6);
  assert_float_equal(params_grad(p, s)[0], 1000.0f, 0.0f);
  /* measure only */
  assert_true(fabs(params_clip_grad_norm(p, 0.0) - 1.0) < 1e-6);
  /* a NaN gradient: the norm says so, nothing is scaled */
  params_grad(p, a)[1] = NAN;
  assert_true(isnan(params_clip_grad_norm(p, 1e-3)));
  assert_true(fabs(params_grad(p, b)[2] - 12.0 / 13.0) < 1e-6);
  params_zero_grad(p);
  for (size_t i = 0; i < p->len; i++)
    assert_float_equal(p->grads[i], 0.0f, 0.0f);
  params_free(p);
}

/* A model-like set; extra names the variants. */
static struct params *model(uint64_t seed, int fc_in, bool extra) {
  struct params *p = params_new();
  params_add(p, "mlp.0.weight", 1, 16, 20, PARAMS_XAVIER_NORMAL, 1.0f);
  params_add(p, "mlp.0.bias", 1, 1, 16, PARAMS_NORMAL, 0.1f);
  params_add(p, "fc.weight", 1, 1, fc_in, PARAMS_XAVIER_UNIFORM, 1.0f);
  if (extra)
    params_add(p, "ln.bias", 1, 1, 16, PARAMS_NORMAL, 0.1f);
  params_add_state(p, "bn.run_mean", 1, 1, 4, PARAMS_NORMAL, 1.0f);
  params_alloc(p, seed);
  return p;
}

static void tmp_path(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "/tmp/maskps_test_params_%d_%s.bin", (int)getpid(), tag);
}

static void test_save_load_round_trip(void **state) {
  (void)state;
  char path[128], err[256] = "", report[512] = "";
  tmp_path(path, sizeof(path), "rt");
  struct params *a = model(1, 16, false);
  for (int s = 0; s < 3; s++) { /* some Adam state */
    for (size_t i = 0; i < a->len; i++)
      a->grads[i] = (float)i * 1e-3f;
    struct params_adam cfg = params_adam_default(1e-2f);
    params_adam_step(a, &cfg);
  }
  assert_int_equal(params_save(a, path, true, err, sizeof(err)), 0);
  struct params *b = model(99, 16, false); /* other init values */
  assert_memory_not_equal(a->values, b->values, sizeof(float) * a->len);
  assert_int_equal(
      params_load(b, path, true, report, sizeof(report), err, sizeof(err)), 4);
  assert_string_equal(report, "loaded 4 of 4");
  assert_memory_equal(a->values, b->values, sizeof(float) * a->len);
  assert_memory_equal(a->adam, b->adam, sizeof(float) * 2 * a->len);
  assert_int_equal(b->step, 3);
  /* without state: values only */
  struct params *c = model(5, 16, false);
  assert_int_equal(params_load(c, path, false, NULL, 0, err, sizeof(err)), 4);
  assert_memory_equal(a->values, c->values, sizeof(float) * a->len);
  assert_int_equal(c->step, 0);
  assert_float_equal(c->adam[0], 0.0f, 0.0f);
  /* warm start into a different model: matches by name and shape */
  struct params *d = model(7, 24, true);
  float keep_fc[24];
  memcpy(keep_fc, params_value(d, params_find(d, "fc.weight")),
         sizeof(keep_fc));
  assert_int_equal(
      params_load(d, path, false, report, sizeof(report), err, sizeof(err)), 3);
  assert_string_equal(report,
                      "loaded 3 of 5; shape differs: fc.weight (file 1x1x16, "
                      "model 1x1x24); not in file: ln.bias");
  assert_memory_equal(params_value(d, 0), params_value(a, 0), 4 * 16 * 20);
  assert_memory_equal(params_value(d, params_find(d, "fc.weight")), keep_fc,
                      sizeof(keep_fc));
  unlink(path);
  params_free(a);
  params_free(b);
  params_free(c);
  params_free(d);
}

static void write_file(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, n, f), n);
  fclose(f);
}

static void expect_load_error(const char *path, const char *want) {
  struct params *p = model(3, 16, false);
  float *before = xmalloc(sizeof(float) * p->len);
  memcpy(before, p->values, sizeof(float) * p->len);
  char err[256] = "";
  assert_int_equal(params_load(p, path, true, NULL, 0, err, sizeof(err)), -1);
  if (!strstr(err, want))
    fail_msg("error '%s' does not mention '%s'", err, want);
  /* a bad file changes nothing */
  assert_memory_equal(p->values, before, sizeof(float) * p->len);
  free(before);
  params_free(p);
}

static void test_load_rejects_bad_files(void **state) {
  (void)state;
  char path[128], bad[128], err[256];
  tmp_path(path, sizeof(path), "good");
  tmp_path(bad, sizeof(bad), "bad");
  struct params *a = model(1, 16, false);
  assert_int_equal(params_save(a, path, true, err, sizeof(err)), 0);
  FILE *f = fopen(path, "rb");
  static uint8_t buf[1 << 16];
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  assert_true(n > 100 && n < sizeof(buf));

  expect_load_error("/nonexistent/dir/p.bin", "cannot open /nonexistent");
  write_file(bad, buf, 5);
  expect_load_error(bad, "too short");
  write_file(bad, "NOTMASKPS-PARAMS-FILE-AT-ALL-0123456789", 39);
  expect_load_error(bad, "wrong magic");
  for (size_t cut = 40; cut < n; cut += 97) { /* truncated anywhere */
    write_file(bad, buf, cut);
    expect_load_error(bad, bad);
  }
  buf[n / 2] ^= 0x10; /* one flipped bit */
  write_file(bad, buf, n);
  expect_load_error(bad, "checksum mismatch");
  buf[n / 2] ^= 0x10;
  buf[8] = 2; /* a newer version */
  write_file(bad, buf, n);
  expect_load_error(bad, "params file version 2, this build reads version 1");
  buf[8] = 1;
  write_file(bad, buf, n); /* restored: loads again */
  struct params *b = model(3, 16, false);
  assert_int_equal(params_load(b, bad, true, NULL, 0, err, sizeof(err)), 4);
  /* saving where nothing can be written */
  assert_int_equal(
      params_save(a, "/nonexistent/dir/p.bin", false, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "cannot create /nonexistent/dir/p.bin.tmp"));
  unlink(path);
  unlink(bad);
  params_free(a);
  params_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_views_are_flat_aligned_and_named),
      cmocka_unit_test(test_init_statistics),
      cmocka_unit_test(test_init_deterministic_by_name),
      cmocka_unit_test(test_adam_constant_gradient_closed_form),
      cmocka_unit_test(test_adam_matches_torch_formula_with_varying_gradients),
      cmocka_unit_test(test_sgd_closed_form),
      cmocka_unit_test(test_clip_grad_norm),
      cmocka_unit_test(test_save_load_round_trip),
      cmocka_unit_test(test_load_rejects_bad_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
