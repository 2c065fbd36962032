/* eta: the time left, on closed-form cases: epoch 1 from bytes (and the
 * line budget, and the reader running ahead), later epochs from steps,
 * max_steps, and the cases with nothing to go on. */
#include "worker/eta.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void assert_near(double got, double want) {
  if (fabs(got - want) > 1e-9 * (1 + fabs(want)))
    fail_msg("got %.12g, want %.12g", got, want);
}

/* Epoch 1 of 2, a quarter of the bytes read and trained on, 10 s so far:
 * an eighth of the run done, so 70 s left. */
static void test_epoch_one_from_bytes(void **state) {
  (void)state;
  struct eta_progress p = {.elapsed_s = 10,
                           .epoch = 1,
                           .epochs = 2,
                           .step = 7,
                           .bytes_done = 25,
                           .bytes_total = 100,
                           .lines_done = 3,
                           .examples_read = 100,
                           .examples_trained = 100};
  assert_near(eta_fraction(&p), 0.125);
  assert_near(eta_seconds(&p), 70);
  /* one epoch: a quarter done, 30 s left */
  p.epochs = 1;
  assert_near(eta_seconds(&p), 30);
  /* the reader is ahead: twice as many examples read as trained, so only
   * an eighth of the input is behind us: 70 s */
  p.examples_read = 200;
  assert_near(eta_fraction(&p), 0.125);
  assert_near(eta_seconds(&p), 70);
  /* a file that grew while read counts as read to its end */
  p.examples_read = 100;
  p.bytes_done = 150;
  assert_near(eta_fraction(&p), 1);
  assert_near(eta_seconds(&p), 0);
}

/* data.max_lines: the epoch ends at the budget or the end of the files,
 * whichever comes first, so the larger share counts. */
static void test_line_budget(void **state) {
  (void)state;
  struct eta_progress p = {.elapsed_s = 10,
                           .epoch = 1,
                           .epochs = 1,
                           .step = 2,
                           .bytes_done = 10,
                           .bytes_total = 1000,
                           .lines_done = 500,
                           .max_lines = 1000,
                           .examples_read = 40,
                           .examples_trained = 40};
  assert_near(eta_fraction(&p), 0.5);
  assert_near(eta_seconds(&p), 10);
  /* a budget larger than the files: the bytes tell */
  p.max_lines = 1000000;
  p.bytes_done = 800;
  assert_near(eta_fraction(&p), 0.8);
  assert_near(eta_seconds(&p), 2.5);
}

/* Once the steps per epoch are known the bytes no longer matter:
 * step 60 of 4 × 50 is 30% of the run; 12 s so far, 28 s left. */
static void test_later_epochs_from_steps(void **state) {
  (void)state;
  struct eta_progress p = {.elapsed_s = 12,
                           .epoch = 2,
                           .epochs = 4,
                           .step = 60,
                           .steps_per_epoch = 50,
                           .bytes_done = 99,
                           .bytes_total = 100,
                           .examples_read = 5,
                           .examples_trained = 5};
  assert_near(eta_fraction(&p), 0.3);
  assert_near(eta_seconds(&p), 28);
}

/* train.max_steps ends the run first when it is the larger fraction. */
static void test_max_steps(void **state) {
  (void)state;
  struct eta_progress p = {.elapsed_s = 12,
                           .epoch = 2,
                           .epochs = 4,
                           .step = 60,
                           .max_steps = 100,
                           .steps_per_epoch = 50};
  assert_near(eta_seconds(&p), 8); /* 60% done */
  p.max_steps = 1000;              /* later than the epochs: steps tell */
  assert_near(eta_seconds(&p), 28);
  /* epoch 1: 10 of 40 steps beats 1% of the bytes */
  struct eta_progress q = {.elapsed_s = 5,
                           .epoch = 1,
                           .epochs = 3,
                           .step = 10,
                           .max_steps = 40,
                           .bytes_done = 1,
                           .bytes_total = 100,
                           .examples_read = 9,
                           .examples_trained = 9};
  assert_near(eta_fraction(&q), 0.25);
  assert_near(eta_seconds(&q), 15);
}

/* Nothing to go on: no step yet, unknown sizes, no time. */
static void test_unknown(void **state) {
  (void)state;
  struct eta_progress p = {.elapsed_s = 3, .epoch = 1, .epochs = 2};
  assert_true(eta_seconds(&p) < 0);
  p.bytes_done = 10; /* sizes unknown (0) */
  p.examples_read = p.examples_trained = 4;
  assert_true(eta_seconds(&p) < 0);
  p.bytes_total = 100;
  assert_near(eta_seconds(&p), 3 * 0.95 / 0.05);
  p.elapsed_s = 0;
  assert_true(eta_seconds(&p) < 0);
  p.elapsed_s = 3;
  p.examples_read = 0; /* bytes read but no example out yet */
  p.examples_trained = 0;
  assert_true(eta_seconds(&p) < 0);
  p.epochs = 0;
  assert_true(eta_seconds(&p) < 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_epoch_one_from_bytes),
      cmocka_unit_test(test_line_budget),
      cmocka_unit_test(test_later_epochs_from_steps),
      cmocka_unit_test(test_max_steps),
      cmocka_unit_test(test_unknown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
