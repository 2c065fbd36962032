/* gen + data: every generated line parses with the project's own Criteo
 * parser, to the keys the generator's fields imply. */
#include "common/gen.h"
#include "common/keys.h"
#include "worker/data.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void check_rows(uint64_t seed, double scale, uint64_t start,
                       uint64_t n) {
  char err[128], why[256], line[GEN_LINE_MAX], tok[24];
  struct gen *g = gen_new(seed, scale, err, sizeof(err));
  assert_non_null(g);
  uint64_t keys[DATA_CRITEO_FIELDS];
  struct data_example ex = {.keys = keys};
  struct gen_row r;
  uint64_t empties = 0, negatives = 0;
  for (uint64_t i = start; i < start + n; i++) {
    gen_row(g, i, &r);
    size_t len = gen_format(&r, line);
    if (data_parse_criteo(line, len, &ex, why, sizeof(why)) != 0)
      fail_msg("row %llu: %s\n%.*s", (unsigned long long)i, why, (int)len,
               line);
    assert_true(ex.label == (float)r.label);
    assert_int_equal(ex.nkeys, DATA_CRITEO_FIELDS);
    for (unsigned j = 0; j < GEN_NUMERIC; j++) {
      /* missing reads as 0, then the Criteo bucket of the value */
      int64_t v = r.num_missing[j] ? 0 : r.num[j];
      int tl = snprintf(tok, sizeof(tok), "%lld",
                        (long long)keys_criteo_bucket((double)v));
      assert_int_equal(keys[j], keys_feature_id(j, tok, (size_t)tl));
      negatives += !r.num_missing[j] && r.num[j] < 0;
    }
    for (unsigned c = 0; c < GEN_CATEGORICAL; c++) {
      uint32_t f = DATA_CRITEO_NUMERIC + c;
      if (r.cat_missing[c]) {
        assert_int_equal(keys[f], keys_missing_id(f));
        empties++;
        continue;
      }
      snprintf(tok, sizeof(tok), "%08x", r.cat[c]);
      assert_int_equal(keys[f], keys_feature_id(f, tok, 8));
    }
  }
  /* the sample did exercise empty fields and negative values */
  assert_true(empties > n);
  assert_true(negatives > 0);
  gen_free(g);
}

static void test_full_vocab_rows_parse(void **state) {
  (void)state;
  check_rows(1, 1.0, 0, 20000);
}

static void test_small_vocab_rows_parse(void **state) {
  (void)state;
  check_rows(42, 0.001, 1000000000000ull, 20000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_vocab_rows_parse),
      cmocka_unit_test(test_small_vocab_rows_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
