/* metrics: AUC against hand-computed values (ties included) and a brute-force
 * pair count, gAUC weighting and skipping, logloss from logits. */
#include "worker/metrics.h"

#include "common/keys.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

/* cmocka 1.1 has no float assertion: |a - b| <= eps, values in the message. */
#define assert_near(a, b, eps) near_((a), (b), (eps), __FILE__, __LINE__)
static void near_(double a, double b, double eps, const char *file, int line) {
  if (!(fabs(a - b) <= eps)) {
    print_error("%.17g != %.17g (eps %g)\n", a, b, eps);
    _fail(file, line);
  }
}

static void test_auc_by_hand(void **state) {
  (void)state;
  /* The textbook example: 3 of 4 (pos, neg) pairs ordered right. */
  const float s1[] = {0.1f, 0.4f, 0.35f, 0.8f}, y1[] = {0, 0, 1, 1};
  assert_near(metrics_auc(s1, y1, 4), 0.75, 1e-12);
  /* Ties between a positive and a negative count 1/2: pairs
   * (p@1,n@1)=.5 (p@1,n@2)=0 (p@2,n@1)=1 (p@2,n@2)=.5 -> 2/4. */
  const float s2[] = {1, 1, 2, 2}, y2[] = {0, 1, 0, 1};
  assert_near(metrics_auc(s2, y2, 4), 0.5, 1e-12);
  /* p@.5 vs two negatives @.5: 2 * .5; p@.9 beats both: 2 -> 3/4. */
  const float s3[] = {0.5f, 0.5f, 0.5f, 0.9f}, y3[] = {1, 0, 0, 1};
  assert_near(metrics_auc(s3, y3, 4), 0.75, 1e-12);
  /* Perfect, reversed, all tied. */
  const float s4[] = {1, 2, 3, 4}, y4[] = {0, 0, 1, 1}, y5[] = {1, 1, 0, 0};
  assert_near(metrics_auc(s4, y4, 4), 1.0, 1e-12);
  assert_near(metrics_auc(s4, y5, 4), 0.0, 1e-12);
  const float s6[] = {7, 7, 7, 7, 7};
  const float y6[] = {1, 0, 1, 0, 0};
  assert_near(metrics_auc(s6, y6, 5), 0.5, 1e-12);
  /* One class only, or nothing: undefined. */
  assert_true(isnan(metrics_auc(s4, (const float[]){1, 1, 1, 1}, 4)));
  assert_true(isnan(metrics_auc(s4, y4, 0)));
}

/* O(n^2) Mann-Whitney: every (positive, negative) pair. */
static double auc_pairs(const float *s, const float *y, size_t n) {
  double good = 0, pairs = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      if (y[i] == 1 && y[j] == 0) {
        pairs += 1;
        good += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
      }
  return good / pairs;
}

static void test_auc_brute_force(void **state) {
  (void)state;
  enum { N = 700 };
  static float s[N], y[N];
  uint64_t x = 42;
  for (int levels = 3; levels <= 1000; levels *= 7) {
    for (int i = 0; i < N; i++) {
      x = keys_mix64(x);
      int q = (int)(x % (uint64_t)levels); /* many ties at few levels */
      s[i] = (float)q / (float)levels - 0.5f;
      x = keys_mix64(x);
      /* labels correlated with the score so the AUC is far from 1/2 */
      y[i] = (double)(x >> 11) / 9007199254740992.0 < 0.2 + 0.6 * (s[i] + 0.5)
                 ? 1.0f
                 : 0.0f;
    }
    double want = auc_pairs(s, y, N);
    assert_true(want > 0.6);
    assert_near(metrics_auc(s, y, N), want, 1e-12);
  }
}

static void test_gauc_weighting(void **state) {
  (void)state;
  /* group 7: 2 impressions, AUC 1; group 3: 3 impressions, AUC 0;
   * group 9: 4 impressions, one class only -> skipped. Interleaved. */
  const float s[] = {1, 1, 5, 2, 2, 6, 3, 7, 8};
  const float y[] = {0, 1, 1, 1, 0, 1, 0, 1, 1};
  const uint64_t g[] = {7, 3, 9, 7, 3, 9, 3, 9, 9};
  uint64_t ng = 0;
  double gauc = metrics_gauc(s, y, g, 9, &ng);
  assert_int_equal(ng, 2);
  assert_near(gauc, (2 * 1.0 + 3 * 0.0) / 5, 1e-12);
  /* No group with both classes: undefined. */
  const uint64_t solo[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  assert_true(isnan(metrics_gauc(s, y, solo, 9, &ng)));
  assert_int_equal(ng, 0);
  /* One group: gAUC is the AUC. */
  assert_near(metrics_gauc(s, y, NULL, 9, NULL), metrics_auc(s, y, 9), 1e-12);
}

static void test_logloss(void **state) {
  (void)state;
  assert_near(metrics_logloss((const float[]){0}, (const float[]){1}, 1),
              log(2.0), 1e-12);
  const float z[] = {2, -1}, y[] = {1, 0};
  assert_near(metrics_logloss(z, y, 2),
              (log1p(exp(-2.0)) + log1p(exp(-1.0))) / 2, 1e-12);
  /* Far logits stay exact (sigmoid(100) rounds to 1 in float). */
  assert_near(metrics_logloss((const float[]){100}, (const float[]){0}, 1),
              100.0, 1e-9);
  assert_near(metrics_logloss((const float[]){-100}, (const float[]){0}, 1),
              log1p(exp(-100.0)), 1e-50);
  assert_true(isnan(metrics_logloss(z, y, 0)));
}

static void test_streaming_and_nonfinite(void **state) {
  (void)state;
  enum { N = 1000 };
  static float s[N], y[N];
  static uint64_t g[N];
  uint64_t x = 7;
  for (int i = 0; i < N; i++) {
    x = keys_mix64(x);
    s[i] = (float)(int)(x % 50) * 0.1f - 2.5f;
    y[i] = (float)((x >> 20) % 3 == 0 || s[i] > 1.5f);
    g[i] = (x >> 40) % 13;
  }
  struct metrics *m = metrics_new();
  for (int off = 0; off < N; off += 37)
    metrics_add(m, s + off, y + off, g + off, off + 37 <= N ? 37 : N - off);
  assert_int_equal(metrics_count(m), N);
  struct metrics_result r;
  metrics_compute(m, &r);
  assert_int_equal(r.n, N);
  uint64_t pos = 0;
  for (int i = 0; i < N; i++)
    pos += y[i] == 1;
  assert_int_equal(r.positives, pos);
  assert_near(r.auc, auc_pairs(s, y, N), 1e-12);
  assert_near(r.logloss, metrics_logloss(s, y, N), 1e-12);
  uint64_t ng;
  assert_near(r.gauc, metrics_gauc(s, y, g, N, &ng), 1e-12);
  assert_int_equal(r.gauc_groups, ng);
  assert_int_equal(r.nonfinite, 0);
  /* Computing reorders the buffer; computing again gives the same. */
  struct metrics_result r2;
  metrics_compute(m, &r2);
  assert_near(r2.auc, r.auc, 0);
  /* A NaN logit poisons every metric (training diverged: say so). */
  metrics_add(m, (const float[]){NAN}, (const float[]){1}, NULL, 1);
  metrics_compute(m, &r2);
  assert_int_equal(r2.nonfinite, 1);
  assert_true(isnan(r2.auc) && isnan(r2.logloss) && isnan(r2.gauc));
  metrics_reset(m);
  assert_int_equal(metrics_count(m), 0);
  metrics_compute(m, &r2);
  assert_int_equal(r2.n, 0);
  assert_true(isnan(r2.auc) && isnan(r2.logloss));
  metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_auc_by_hand),
      cmocka_unit_test(test_auc_brute_force),
      cmocka_unit_test(test_gauc_weighting),
      cmocka_unit_test(test_logloss),
      cmocka_unit_test(test_streaming_and_nonfinite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
