/* ops: behaviour the gradient check does not cover: softmax at extreme
 * temperatures, logloss at huge logits, dropout's determinism and keep rate,
 * BatchNorm/Dice running statistics, AMTL prefixes in gather/scatter, the
 * non-finite scan, and CHECKs that fire on our own shape bugs. */
#include "worker/nn/ops.h"

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/check.h"
#include "common/keys.h"

static float urand(uint64_t seed, long i) {
  uint64_t h = keys_mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)i);
  return (float)((double)(h >> 40) / (double)(1 << 23) - 1.0);
}

static void test_softmax_extreme_temperatures(void **state) {
  (void)state;
  enum { N0 = 8, A = 16, N1 = 3 };
  static float x[N0 * A * N1], y[N0 * A * N1];
  for (int i = 0; i < N0 * A * N1; i++)
    x[i] = 50.0f * urand(3, i); /* logits in [-50, 50) */
  const float temps[] = {1e-4f, 1e-2f, 1.0f, 1e2f, 1e6f};
  for (size_t t = 0; t < ARRAY_LEN(temps); t++) {
    nn_softmax_forward(x, y, N0, A, N1, temps[t]);
    for (int o = 0; o < N0; o++)
      for (int in = 0; in < N1; in++) {
        double s = 0.0;
        int amax = 0;
        float second = -INFINITY;
        for (int a = 0; a < A; a++) {
          float v = y[(o * A + a) * N1 + in];
          assert_true(isfinite(v) && v >= 0.0f && v <= 1.0f);
          s += v;
          if (x[(o * A + a) * N1 + in] > x[(o * A + amax) * N1 + in])
            amax = a;
        }
        /* A float sum of 16 entries each rounded to 2^-24 relative. */
        if (fabs(s - 1.0) > 1e-6)
          fail_msg("T=%g: row (%d,%d) sums to %.9g", temps[t], o, in, s);
        for (int a = 0; a < A; a++)
          if (a != amax)
            second = fmaxf(second, x[(o * A + a) * N1 + in]);
        float top = y[(o * A + amax) * N1 + in];
        /* the arg max gets at least 1 / (1 + (A-1) e^(-gap/T)) */
        double gap = x[(o * A + amax) * N1 + in] - second;
        double low = 1.0 / (1.0 + (A - 1) * exp(-gap / temps[t]));
        assert_true(top >= low - 1e-6);
        if (temps[t] <= 1e-4f) /* cold: one-hot, for these logits */
          assert_true(top > 0.999f);
        if (temps[t] >= 1e6f) /* hot: uniform */
          assert_true(fabsf(top - 1.0f / A) < 1e-4f);
      }
  }
}

static void test_logloss_stable_at_huge_logits(void **state) {
  (void)state;
  const float z[4] = {100, 100, -100, -100}, y[4] = {1, 0, 1, 0};
  double l = nn_logloss_forward(z, y, 4);
  /* exact: two terms of log1p(e^-100) ~ 3.7e-44 and two of 100 + that */
  assert_true(isfinite(l));
  assert_true(fabs(l - 50.0) < 1e-12);
  float dz[4] = {0};
  nn_logloss_backward(z, y, dz, 4, 1.0f);
  for (int i = 0; i < 4; i++)
    assert_true(isfinite(dz[i]));
  assert_true(fabsf(dz[0]) < 1e-30f);
  assert_float_equal(dz[1], 0.25f, 0.0f);
  assert_float_equal(dz[2], -0.25f, 0.0f);
  assert_true(fabsf(dz[3]) < 1e-30f);
  /* far beyond float exp's range */
  const float zz[2] = {1e30f, -1e30f}, yy[2] = {0, 0};
  l = nn_logloss_forward(zz, yy, 2);
  assert_true(isfinite(l) && fabs(l / (0.5 * (double)zz[0]) - 1.0) < 1e-12);
  /* the textbook value at 0: log 2 */
  const float z0 = 0, y0 = 1;
  assert_true(fabs(nn_logloss_forward(&z0, &y0, 1) - log(2.0)) < 1e-15);
}

static void test_dropout_deterministic_and_keep_rate(void **state) {
  (void)state;
  enum { N = 100000 };
  static float x[N], a[N], b[N], c[N];
  for (int i = 0; i < N; i++)
    x[i] = 1.0f;
  const float p = 0.3f;
  nn_dropout_forward(x, a, N, p, 42, 7);
  nn_dropout_forward(x, b, N, p, 42, 7);
  assert_memory_equal(a, b, sizeof(a)); /* same (seed, step): same mask */
  nn_dropout_forward(x, c, N, p, 42, 8);
  long kept = 0, same = 0;
  double sum = 0;
  for (int i = 0; i < N; i++) {
    assert_true(a[i] == 0.0f || a[i] == 1.0f / (1.0f - p)); /* inverted */
    kept += a[i] != 0.0f;
    same += (a[i] != 0.0f) == (c[i] != 0.0f);
    sum += a[i];
  }
  /* Keep rate 0.7, binomial sd sqrt(0.21 / 1e5) = 0.00145: 4 sd = 0.006. */
  assert_true(fabs((double)kept / N - 0.7) < 0.006);
  assert_true(fabs(sum / N - 1.0) < 0.009); /* E[y] = x, sd 0.0021 */
  /* another step draws another mask: agreement 0.7^2 + 0.3^2 = 0.58 */
  assert_true(fabs((double)same / N - 0.58) < 0.01);
  /* an element's bit does not depend on n (no sequential generator) */
  float small[10];
  nn_dropout_forward(x, small, 10, p, 42, 7);
  assert_memory_equal(small, a, sizeof(small));
  for (int i = 0; i < 10; i++)
    assert_int_equal(nn_dropout_keep(42, 7, i, p), a[i] != 0.0f);
  /* backward: the same mask, the same scale, accumulating */
  float dy[10], dx[10];
  for (int i = 0; i < 10; i++) {
    dy[i] = 2.0f;
    dx[i] = 1.0f;
  }
  nn_dropout_backward(dy, dx, 10, p, 42, 7);
  for (int i = 0; i < 10; i++)
    assert_float_equal(dx[i], 1.0f + 2.0f * a[i], 1e-6f);
  /* p = 0 is the identity */
  nn_dropout_forward(x, c, N, 0.0f, 42, 7);
  assert_memory_equal(c, x, sizeof(x));
}

static void test_batchnorm_running_stats_and_eval(void **state) {
  (void)state;
  enum { B = 4, H = 2 };
  const float x[B * H] = {1, 10, 2, 20, 3, 30, 6, 40};
  float rm[H], rv[H], mean[H], rstd[H], y[B * H];
  const float g[H] = {2, 0.5f}, be[H] = {1, -1};
  struct nn_bnstats s = {
      .H = H, .eps = 1e-5f, .momentum = 0.1f, .run_mean = rm, .run_var = rv};
  nn_bnstats_init(&s);
  assert_float_equal(rm[0], 0.0f, 0.0f);
  assert_float_equal(rv[1], 1.0f, 0.0f);
  nn_batchnorm_forward(x, g, be, y, mean, rstd, &s, B, true);
  /* column 0: mean 3, biased var 3.5, unbiased 14/3; column 1: mean 25,
   * biased var 125, unbiased 500/3 */
  assert_float_equal(mean[0], 3.0f, 1e-6f);
  assert_float_equal(rstd[1], 1.0f / sqrtf(125.0f + 1e-5f), 1e-7f);
  assert_float_equal(rm[0], 0.3f, 1e-6f);
  assert_float_equal(rm[1], 2.5f, 1e-6f);
  assert_float_equal(rv[0], 0.9f + 0.1f * 14.0f / 3.0f, 1e-6f);
  assert_float_equal(rv[1], 0.9f + 0.1f * 500.0f / 3.0f, 1e-4f);
  /* training output: normalised by the batch */
  assert_float_equal(y[0], 2.0f * (1 - 3) / sqrtf(3.5f + 1e-5f) + 1, 1e-5f);
  /* evaluation: the running statistics, cache untouched, no update */
  rm[0] = 1.0f, rv[0] = 4.0f, rm[1] = -2.0f, rv[1] = 0.25f;
  float m0 = mean[0], r0 = rstd[0];
  nn_batchnorm_forward(x, g, be, y, mean, rstd, &s, B, false);
  for (int i = 0; i < B; i++) {
    assert_float_equal(y[i * H], 2.0f * (x[i * H] - 1) / sqrtf(4 + 1e-5f) + 1,
                       1e-5f);
    assert_float_equal(y[i * H + 1],
                       0.5f * (x[i * H + 1] + 2) / sqrtf(0.25f + 1e-5f) - 1,
                       1e-4f);
  }
  assert_float_equal(mean[0], m0, 0.0f);
  assert_float_equal(rstd[0], r0, 0.0f);
  assert_float_equal(rm[0], 1.0f, 0.0f);
  assert_float_equal(rv[1], 0.25f, 0.0f);
  /* Dice at evaluation: p from the running statistics */
  const float alpha[H] = {0.25f, -0.5f};
  nn_dice_forward(x, alpha, y, mean, rstd, &s, B, false);
  for (int i = 0; i < B * H; i++) {
    int h = i % H;
    double p = 1.0 / (1.0 + exp(-(x[i] - rm[h]) / sqrt(rv[h] + 1e-5)));
    double want = p * x[i] + (1 - p) * alpha[h] * x[i];
    assert_float_equal(y[i], (float)want, 1e-4f * (1 + fabs(want)));
  }
  assert_float_equal(rm[0], 1.0f, 0.0f);
}

static void test_embed_prefix_and_missing(void **state) {
  (void)state;
  enum { U = 3, D = 4, B = 2, F = 2 };
  /* garbage beyond each prefix, as a reused pull buffer would hold */
  float rows[U * D] = {1, 2, 3, 4, 5, 6, 99, 99, 7, 99, 99, 99};
  const uint16_t prefix[U] = {4, 2, 1};
  const int32_t idx[B * F] = {1, -1, 2, 1};
  float out[B * F * D];
  nn_embed_gather(rows, prefix, idx, NULL, out, B, F, D, U);
  const float want[B * F * D] = {5, 6, 0, 0, 0, 0, 0, 0,
                                 7, 0, 0, 0, 5, 6, 0, 0};
  assert_memory_equal(out, want, sizeof(want));
  float dout[B * F * D], drows[U * D];
  for (int i = 0; i < B * F * D; i++)
    dout[i] = 1.0f;
  for (int i = 0; i < U * D; i++)
    drows[i] = -7.0f; /* sentinel: entries beyond p must stay untouched */
  nn_embed_scatter(dout, prefix, idx, NULL, drows, B, F, D, U);
  const float dwant[U * D] = {-7, -7, -7, -7, -5, -5, -7, -7, -6, -7, -7, -7};
  assert_memory_equal(drows, dwant, sizeof(dwant));
  /* no prefix array: full rows */
  nn_embed_gather(rows, NULL, idx, NULL, out, B, F, D, U);
  assert_float_equal(out[2], 99.0f, 0.0f);
}

static void test_amtl_onehot_prefix(void **state) {
  (void)state;
  /* rows: arg max at 1; a tie between 0 and 3 (the shorter prefix wins);
   * arg max at the last index (the full row) */
  const float t[3 * 4] = {0.1f, 0.6f, 0.2f, 0.1f, 0.4f, 0.1f,
                          0.1f, 0.4f, 0.0f, 0.0f, 0.1f, 0.9f};
  float y[12], m[12];
  nn_onehot_argmax(t, y, 3, 4);
  const float oh[12] = {0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1};
  assert_memory_equal(y, oh, sizeof(oh));
  nn_prefix_mask_forward(y, m, 3, 4);
  const float mk[12] = {1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
  assert_memory_equal(m, mk, sizeof(mk));
  /* the gradient reaching index k is the sum of dm_j over j <= k */
  const float dm[4] = {1, 2, 3, 4};
  float dt[4] = {0};
  nn_prefix_mask_backward(dm, dt, 1, 4);
  const float want[4] = {1, 3, 6, 10};
  assert_memory_equal(dt, want, sizeof(want));
}

static void test_find_nonfinite(void **state) {
  (void)state;
  float x[32];
  for (int i = 0; i < 32; i++)
    x[i] = (float)i - 16.0f;
  char err[128] = "";
  assert_int_equal(nn_find_nonfinite(x, 32), -1);
  assert_int_equal(nn_check_finite("logits", x, 32, err, sizeof(err)), 0);
  assert_int_equal(nn_find_nonfinite(x, 0), -1);
  x[20] = INFINITY;
  x[7] = NAN;
  assert_int_equal(nn_find_nonfinite(x, 32), 7);
  assert_int_equal(nn_check_finite("logits", x, 32, err, sizeof(err)), -1);
  assert_string_equal(err, "logits[7] = nan (first non-finite of 32)");
  assert_int_equal(nn_find_nonfinite(x, 7), -1);
  x[7] = 0;
  assert_int_equal(nn_check_finite("grad", x, 32, err, sizeof(err)), -1);
  assert_string_equal(err, "grad[20] = inf (first non-finite of 32)");
  x[20] = -INFINITY;
  nn_check_finite("grad", x, 32, err, sizeof(err));
  assert_string_equal(err, "grad[20] = -inf (first non-finite of 32)");
}

/* Runs fn in a child; true if it died of SIGABRT (a CHECK). */
static bool aborts(void (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    /* keep the expected CHECK message out of the test log */
    if (!freopen("/dev/null", "w", stderr))
      _exit(3);
    fn();
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void bad_idx(void) {
  float rows[4] = {0}, out[4];
  const int32_t idx[2] = {0, 2}; /* U = 2: index 2 is out of range */
  nn_embed_gather(rows, NULL, idx, NULL, out, 1, 2, 2, 2);
}
static void bad_prefix(void) {
  float rows[4] = {0}, out[4];
  const int32_t idx[2] = {0, 1};
  const uint16_t prefix[2] = {2, 3}; /* p > D */
  nn_embed_gather(rows, prefix, idx, NULL, out, 1, 2, 2, 2);
}
static void bad_temperature(void) {
  float x[2] = {0}, y[2];
  nn_softmax_forward(x, y, 1, 2, 1, 0.0f);
}
static void bad_mask_rows(void) {
  float m[4] = {0}, e[8] = {0}, y[8];
  nn_field_scale_forward(m, e, y, 2, 2, 2, 3); /* mB must be B or 1 */
}
static void bad_batch_for_stats(void) {
  float x[2] = {0}, y[2], mean[2], rstd[2], rm[2], rv[2];
  struct nn_bnstats s = {
      .H = 2, .eps = 1e-5f, .momentum = 0.1f, .run_mean = rm, .run_var = rv};
  nn_batchnorm_forward(x, NULL, NULL, y, mean, rstd, &s, 1, true);
}
static void bad_dropout_p(void) {
  float x[2] = {0}, y[2];
  nn_dropout_forward(x, y, 2, 1.0f, 1, 1);
}
static void fine(void) {
  float x[2] = {0}, y[2];
  nn_softmax_forward(x, y, 1, 2, 1, 1.0f);
}

static void test_shape_bugs_are_checked(void **state) {
  (void)state;
  assert_false(aborts(fine)); /* the harness itself can say no */
  assert_true(aborts(bad_idx));
  assert_true(aborts(bad_prefix));
  assert_true(aborts(bad_temperature));
  assert_true(aborts(bad_mask_rows));
  assert_true(aborts(bad_batch_for_stats));
  assert_true(aborts(bad_dropout_p));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_softmax_extreme_temperatures),
      cmocka_unit_test(test_logloss_stable_at_huge_logits),
      cmocka_unit_test(test_dropout_deterministic_and_keep_rate),
      cmocka_unit_test(test_batchnorm_running_stats_and_eval),
      cmocka_unit_test(test_embed_prefix_and_missing),
      cmocka_unit_test(test_amtl_onehot_prefix),
      cmocka_unit_test(test_find_nonfinite),
      cmocka_unit_test(test_shape_bugs_are_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
