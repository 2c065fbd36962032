/* op_fixtures: the ops with PyTorch semantics worth pinning (LayerNorm,
 * BatchNorm with its running statistics, Dice, PReLU, softmax with a
 * temperature) against the committed PyTorch fixtures tests/nn/fixtures/op_*
 * (contract: tests/nn/README.md). Each file holds x (8,6), the upstream
 * gradient dy, the parameters, torch's output y and the gradients of
 * L = sum(y * dy); we run forward then backward with dy and compare every
 * tensor with fixture_max_err (max abs difference / max abs value).
 *
 * Tolerance 1e-5: the README measured each file's float32-vs-float64 error
 * at <= 2.4e-7; ours adds a similar rounding, and 1e-5 leaves a margin of
 * ~10x over both while any formula difference (biased vs unbiased variance,
 * eps placement, a missing term) is >= 1e-3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/nn/fixture.h"
#include "worker/nn/ops.h"

enum { B = 8, H = 6 };
static const double TOL = 1e-5;

static struct fixture *open_fx(const char *name) {
  char err[256];
  struct fixture *fx = fixture_open_named(name, err, sizeof(err));
  if (!fx)
    fail_msg("%s", err);
  return fx;
}

static const float *need(struct fixture *fx, const char *name, size_t n) {
  struct fixture_shape sh;
  const float *p = fixture_get(fx, name, &sh);
  if (!p)
    fail_msg("fixture has no float tensor %s", name);
  if (sh.numel != n)
    fail_msg("%s has %zu elements, expected %zu", name, sh.numel, n);
  return p;
}

static void expect(struct fixture *fx, const char *op, const char *name,
                   const float *got, size_t n) {
  size_t worst = 0;
  double e = fixture_max_err(got, need(fx, name, n), n, &worst);
  if (!(e <= TOL))
    fail_msg("%s: %s differs from PyTorch by %.3g (worst [%zu]: %.8g vs "
             "%.8g)",
             op, name, e, worst, got[worst], need(fx, name, n)[worst]);
}

static void test_layernorm_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx("op_layernorm");
  const float *x = need(fx, "input/x", B * H),
              *dy = need(fx, "input/dy", B * H);
  const float *g = need(fx, "param/weight", H), *b = need(fx, "param/bias", H);
  float y[B * H], mean[B], rstd[B], dx[B * H] = {0}, dg[H] = {0}, db[H] = {0};
  nn_layernorm_forward(x, g, b, y, mean, rstd, B, H, 1e-5f);
  nn_layernorm_backward(x, g, mean, rstd, dy, dx, dg, db, B, H);
  expect(fx, "layernorm", "output/y", y, B * H);
  expect(fx, "layernorm", "grad/input/x", dx, B * H);
  expect(fx, "layernorm", "grad/weight", dg, H);
  expect(fx, "layernorm", "grad/bias", db, H);
  fixture_free(fx);
}

static void test_batchnorm_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx("op_batchnorm");
  const float *x = need(fx, "input/x", B * H),
              *dy = need(fx, "input/dy", B * H);
  const float *g = need(fx, "param/weight", H), *b = need(fx, "param/bias", H);
  float rm[H], rv[H];
  memcpy(rm, need(fx, "input/running_mean", H), sizeof(rm));
  memcpy(rv, need(fx, "input/running_var", H), sizeof(rv));
  struct nn_bnstats s = {
      .H = H, .eps = 1e-5f, .momentum = 0.1f, .run_mean = rm, .run_var = rv};
  float y[B * H], mean[H], rstd[H], dx[B * H] = {0}, dg[H] = {0}, db[H] = {0};
  nn_batchnorm_forward(x, g, b, y, mean, rstd, &s, B, true);
  nn_batchnorm_backward(x, g, mean, rstd, dy, dx, dg, db, B, H);
  expect(fx, "batchnorm", "output/y", y, B * H);
  expect(fx, "batchnorm", "output/running_mean", rm, H);
  expect(fx, "batchnorm", "output/running_var", rv, H);
  expect(fx, "batchnorm", "grad/input/x", dx, B * H);
  expect(fx, "batchnorm", "grad/weight", dg, H);
  expect(fx, "batchnorm", "grad/bias", db, H);
  fixture_free(fx);
}

static void test_dice_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx("op_dice");
  const float *x = need(fx, "input/x", B * H),
              *dy = need(fx, "input/dy", B * H);
  const float *a = need(fx, "param/alpha", H);
  float rm[H], rv[H];
  memcpy(rm, need(fx, "input/running_mean", H), sizeof(rm));
  memcpy(rv, need(fx, "input/running_var", H), sizeof(rv));
  /* FuxiCTR's Dice: BatchNorm1d(affine=False, eps=1e-9, momentum=0.01) */
  struct nn_bnstats s = {
      .H = H, .eps = 1e-9f, .momentum = 0.01f, .run_mean = rm, .run_var = rv};
  float y[B * H], mean[H], rstd[H], dx[B * H] = {0}, da[H] = {0};
  nn_dice_forward(x, a, y, mean, rstd, &s, B, true);
  nn_dice_backward(x, a, mean, rstd, dy, dx, da, B, H);
  expect(fx, "dice", "output/y", y, B * H);
  expect(fx, "dice", "output/running_mean", rm, H);
  expect(fx, "dice", "output/running_var", rv, H);
  expect(fx, "dice", "grad/input/x", dx, B * H);
  expect(fx, "dice", "grad/alpha", da, H);
  fixture_free(fx);
}

static void test_prelu_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx("op_prelu");
  const float *x = need(fx, "input/x", B * H),
              *dy = need(fx, "input/dy", B * H);
  const float *a = need(fx, "param/alpha", H);
  float y[B * H], dx[B * H] = {0}, da[H] = {0};
  nn_prelu_forward(x, a, y, B, H);
  nn_prelu_backward(x, a, dy, dx, da, B, H);
  expect(fx, "prelu", "output/y", y, B * H);
  expect(fx, "prelu", "grad/input/x", dx, B * H);
  expect(fx, "prelu", "grad/alpha", da, H);
  fixture_free(fx);
}

static void test_softmax_vs_torch(void **state) {
  (void)state;
  struct fixture *fx = open_fx("op_softmax");
  const float *x = need(fx, "input/x", B * H),
              *dy = need(fx, "input/dy", B * H);
  float y[B * H], dx[B * H] = {0};
  nn_softmax_forward(x, y, B, H, 1, 0.5f); /* tau 0.5, over the features */
  nn_softmax_backward(y, dy, dx, B, H, 1, 0.5f);
  expect(fx, "softmax", "output/y", y, B * H);
  expect(fx, "softmax", "grad/input/x", dx, B * H);
  fixture_free(fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layernorm_vs_torch),
      cmocka_unit_test(test_batchnorm_vs_torch),
      cmocka_unit_test(test_dice_vs_torch),
      cmocka_unit_test(test_prelu_vs_torch),
      cmocka_unit_test(test_softmax_vs_torch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
