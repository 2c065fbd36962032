/* data: Criteo lines parse to the documented keys; malformed lines are
 * rejected with the reason. */
#include "worker/data.h"

#include "common/keys.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const char good[] =
    "1\t5\t\t3\t100\t-1\t0\t2\t7\t1000000\t\t4\t\t9\t"
    "68fd1e64\t80e26c9b\tfb936136\t7b4723c4\t25c83c98\t7e0ccccf\tde7995b8\t"
    "1f89b562\ta73ee510\ta8cd5504\tb2cb9c98\t37c9c164\t2824a5f6\t1adce6ef\t"
    "8ba8b39a\t891b62e7\te5ba7672\tf54016b9\t21ddcdc9\tb1252a9d\t07b5194c\t"
    "\t3a171ecb\tc5c50484\te8b83407\t9727dd16\n";

static uint64_t num_key(uint32_t f, const char *tok) {
  return keys_feature_id(f, tok, strlen(tok));
}

static void test_parses_good_line(void **state) {
  (void)state;
  uint64_t keys[DATA_CRITEO_FIELDS];
  struct data_example ex = {.keys = keys};
  char why[128];
  assert_int_equal(data_parse_criteo(good, strlen(good), &ex, why, sizeof(why)),
                   0);
  assert_true(ex.label == 1.0f);
  assert_int_equal(ex.nkeys, 39);
  assert_int_equal(keys[0], num_key(0, "2")); /* 5 -> floor(1.609^2) */
  assert_int_equal(keys[1], num_key(1, "0")); /* missing numeric -> 0 */
  assert_int_equal(keys[2], num_key(2, "1")); /* 3 -> floor(1.0986^2) */
  assert_int_equal(keys[3], num_key(3, "21")); /* 100 -> floor(4.605^2) */
  assert_int_equal(keys[4], num_key(4, "-1"));
  assert_int_equal(keys[8], num_key(8, "190")); /* 1e6 */
  assert_int_equal(keys[13], keys_feature_id(13, "68fd1e64", 8));
  assert_int_equal(keys[34], keys_missing_id(34)); /* empty C22 */
  assert_int_equal(keys[38], keys_feature_id(38, "9727dd16", 8));
  /* CRLF and a missing final newline parse the same. */
  char crlf[sizeof(good) + 1];
  size_t n = strlen(good);
  memcpy(crlf, good, n - 1);
  memcpy(crlf + n - 1, "\r\n", 3);
  uint64_t keys2[DATA_CRITEO_FIELDS];
  struct data_example ex2 = {.keys = keys2};
  assert_int_equal(data_parse_criteo(crlf, n + 1, &ex2, why, sizeof(why)), 0);
  assert_memory_equal(keys, keys2, sizeof(keys));
  assert_int_equal(data_parse_criteo(good, n - 1, &ex2, why, sizeof(why)), 0);
  assert_memory_equal(keys, keys2, sizeof(keys));
}

static void expect_bad(const char *line, const char *want) {
  uint64_t keys[DATA_CRITEO_FIELDS];
  struct data_example ex = {.keys = keys};
  char why[128] = "";
  assert_int_equal(data_parse_criteo(line, strlen(line), &ex, why, sizeof(why)),
                   -1);
  if (strcmp(why, want))
    fail_msg("got '%s', expected '%s'", why, want);
}

static void test_rejects_malformed(void **state) {
  (void)state;
  char line[sizeof(good) + 64];
  expect_bad("", "1 columns (expected 40: label, I1..I13, C1..C26)");
  expect_bad("1\t2\t3\n", "3 columns (expected 40: label, I1..I13, C1..C26)");
  snprintf(line, sizeof(line), "%s", good);
  line[0] = '2';
  expect_bad(line, "column 1 (label): '2' is not 0 or 1");
  snprintf(line, sizeof(line), "%s", good);
  memcpy(line + 2, "x", 1); /* I1 = "x" */
  expect_bad(line, "column 2 (I1): 'x' is not an integer");
  snprintf(line, sizeof(line), "1.5%s", good + 1);
  expect_bad(line, "column 1 (label): '1.5' is not 0 or 1");
  snprintf(line, sizeof(line), "%s", good);
  line[strlen(line) - 1] = '\t'; /* 41 columns */
  expect_bad(line, "41 columns (expected 40: label, I1..I13, C1..C26)");
  snprintf(line, sizeof(line), "0\t99999999999999999999999%s", good + 3);
  expect_bad(line, "column 2 (I1): '99999999999999999999999' is not an "
                   "integer");
}

static void test_libfm(void **state) {
  (void)state;
  uint64_t keys[16];
  struct data_example ex = {.keys = keys};
  char why[128] = "";
  const char *l = "-1 451:1 4149:1 5041:1.0\n";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 16, &ex, why, sizeof(why)),
                   0);
  assert_true(ex.label == 0.0f);
  assert_int_equal(ex.nkeys, 3);
  assert_int_equal(keys[0], keys_feature_id(0, "451", 3));
  assert_int_equal(keys[2], keys_feature_id(2, "5041", 4));
  l = "+1 7:1 8:1 9:1";
  assert_int_equal(data_parse_libfm(l, strlen(l), 3, 16, &ex, why, sizeof(why)),
                   0);
  assert_true(ex.label == 1.0f);
  const struct {
    const char *line, *why;
  } bad[] = {
      {"2 1:1", "label '2' is not 0/1 or -1/+1"},
      {"1 1:1 2:0.5 3:1", "feature 2: value '0.5' is not 1 (only binary "
                          "features are supported)"},
      {"1 1:1 2 3:1", "feature 2: '2' is not idx:value"},
      {"1 1:1 :1 3:1", "feature 2: ':1' is not idx:value"},
      {"1 1:1 2:1", "2 features (expected 3, as on the first line)"},
      {"1", "no features"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    uint32_t nf = strcmp(bad[i].line, "1") ? 3 : 0;
    assert_int_equal(data_parse_libfm(bad[i].line, strlen(bad[i].line), nf, 16,
                                      &ex, why, sizeof(why)),
                     -1);
    if (strcmp(why, bad[i].why))
      fail_msg("'%s': got '%s', expected '%s'", bad[i].line, why, bad[i].why);
  }
  assert_int_equal(data_parse_libfm("1 1:1 2:1 3:1", 13, 0, 2, &ex, why,
                                    sizeof(why)),
                   -1);
  assert_string_equal(why, "more than 2 features");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parses_good_line),
      cmocka_unit_test(test_rejects_malformed),
      cmocka_unit_test(test_libfm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
