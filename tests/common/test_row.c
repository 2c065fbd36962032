/* row: encode/decode round trips, size math, version and corruption checks. */
#include "common/row.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void fill(struct row *r, unsigned p, enum row_opt opt, float *v,
                 float *st) {
  memset(r, 0, sizeof(*r));
  r->opt = (uint8_t)opt;
  r->p = (uint16_t)p;
  r->flags = p ? 0 : ROW_F_PENDING;
  r->count = 0xfffffffeu;
  r->clicks = 77;
  r->last_step = 0x0102030405060708ull;
  r->opt_step = 123456;
  r->values = v;
  r->state = st;
  for (unsigned i = 0; i < p; i++)
    v[i] = (float)i * 0.25f - 1.5f;
  for (unsigned i = 0; i < p * row_slots(opt); i++)
    st[i] = (float)i + 0.125f;
}

static void test_round_trip_every_opt_and_p(void **state) {
  (void)state;
  static float v[ROW_MAX_DIM], st[2 * ROW_MAX_DIM], v2[ROW_MAX_DIM],
      st2[2 * ROW_MAX_DIM];
  static uint8_t buf[ROW_HEADER_LEN + 12 * ROW_MAX_DIM];
  const unsigned ps[] = {0, 1, 3, 16, 64, ROW_MAX_DIM};
  for (int opt = 0; opt < ROW_OPT_COUNT_; opt++)
    for (size_t i = 0; i < sizeof(ps) / sizeof(*ps); i++) {
      struct row r, d = {0};
      fill(&r, ps[i], (enum row_opt)opt, v, st);
      size_t n = row_encode(&r, buf, sizeof(buf));
      assert_int_equal(n, row_size(ps[i], (enum row_opt)opt));
      assert_int_equal(n, 32 + 4 * ps[i] * (1 + row_slots((enum row_opt)opt)));
      d.values = v2;
      d.state = st2;
      char err[128];
      assert_int_equal(row_decode(buf, n, &d, err, sizeof(err)), 0);
      assert_int_equal(d.version, ROW_VERSION);
      assert_int_equal(d.opt, opt);
      assert_int_equal(d.p, ps[i]);
      assert_int_equal(d.flags, r.flags);
      assert_int_equal(d.count, r.count);
      assert_int_equal(d.clicks, r.clicks);
      assert_int_equal(d.last_step, r.last_step);
      assert_int_equal(d.opt_step, r.opt_step);
      assert_memory_equal(v2, v, 4 * ps[i]);
      assert_memory_equal(st2, st, 4 * ps[i] * row_slots((enum row_opt)opt));
    }
}

static void test_slots(void **state) {
  (void)state;
  assert_int_equal(row_slots(ROW_OPT_SGD), 0);
  assert_int_equal(row_slots(ROW_OPT_ADAGRAD), 1);
  assert_int_equal(row_slots(ROW_OPT_ADAM), 2);
  assert_int_equal(row_slots(ROW_OPT_FTRL), 2);
  /* AMTL: bytes proportional to p (plus the fixed header). */
  assert_int_equal(row_size(8, ROW_OPT_ADAM) - 32,
                   (row_size(16, ROW_OPT_ADAM) - 32) / 2);
  assert_string_equal(row_opt_name(ROW_OPT_FTRL), "ftrl");
  assert_string_equal(row_opt_name((enum row_opt)99), "?");
}

static void test_encode_small_buffer(void **state) {
  (void)state;
  float v[4], st[8];
  uint8_t buf[64];
  struct row r;
  fill(&r, 4, ROW_OPT_ADAM, v, st);
  assert_int_equal(row_encode(&r, buf, row_size(4, ROW_OPT_ADAM) - 1), 0);
}

/* A valid encoded row with p=4, adagrad. */
static size_t sample(uint8_t *buf) {
  float v[4], st[4];
  struct row r;
  fill(&r, 4, ROW_OPT_ADAGRAD, v, st);
  return row_encode(&r, buf, 256);
}

static void expect_err(const uint8_t *buf, size_t n, const char *want) {
  struct row d;
  char err[160] = "";
  assert_int_equal(row_peek(buf, n, &d, err, sizeof(err)), -1);
  if (!strstr(err, want))
    fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_rejects_bad_rows(void **state) {
  (void)state;
  uint8_t buf[256];
  size_t n = sample(buf);
  expect_err(buf, 10, "shorter than the 32-byte header");
  expect_err(buf, n - 4, "does not match p=4 opt=adagrad (expected 64)");
  expect_err(buf, n + 4, "expected 64");
  buf[0] = 2;
  expect_err(buf, n, "version 2 is not one this build reads (1..1); written "
                     "by a newer maskps?");
  buf[0] = 0;
  expect_err(buf, n, "version 0");
  n = sample(buf);
  buf[2] = 9;
  expect_err(buf, n, "unknown optimizer kind 9");
  n = sample(buf);
  buf[4] = 0xff;
  buf[5] = 0xff;
  expect_err(buf, n, "prefix length 65535 exceeds 4096");
  n = sample(buf);
  buf[29] = 1;
  expect_err(buf, n, "reserved header bytes");
  n = sample(buf);
  buf[1] = ROW_F_PENDING;
  expect_err(buf, n, "pending flag set but p=4");
}

/* Every single-byte corruption of the header is either rejected or decodes
 * to a row of the same size: never a read past the buffer (ASan watches). */
static void test_header_corruption_never_overreads(void **state) {
  (void)state;
  uint8_t good[256], buf[256];
  size_t n = sample(good);
  for (int i = 0; i < ROW_HEADER_LEN; i++)
    for (int bit = 0; bit < 8; bit++) {
      memcpy(buf, good, n);
      buf[i] ^= (uint8_t)(1 << bit);
      struct row d;
      float v[ROW_MAX_DIM], st[ROW_MAX_DIM];
      d.values = v;
      d.state = st;
      char err[128];
      if (row_decode(buf, n, &d, err, sizeof(err)) == 0)
        assert_int_equal(row_size(d.p, (enum row_opt)d.opt), n);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_every_opt_and_p),
      cmocka_unit_test(test_slots),
      cmocka_unit_test(test_encode_small_buffer),
      cmocka_unit_test(test_rejects_bad_rows),
      cmocka_unit_test(test_header_corruption_never_overreads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
