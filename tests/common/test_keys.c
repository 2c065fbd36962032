/* keys: stable hash values, shard balance, jump-hash movement, bucketing. */
#include "common/keys.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define FID_0_68fd1e64 0x0d65caf5f54036a3ull
#define FID_3_68fd1e64 0x7631b388793ffbb7ull
#define FID_0_EMPTY 0x79181395b93ef40dull
#define MISSING_7 0xe34d4d74fde51c82ull
#define JUMP_1_10 6
#define JUMP_DEAD_1000 144

/* Values pinned when the format was fixed: a change here silently reshuffles
 * every stored table, so it must fail loudly. The jump-hash values were
 * checked against an independent Python transcription of Lamping & Veach. */
static void test_stable_values(void **state) {
  (void)state;
  assert_int_equal(keys_feature_id(0, "68fd1e64", 8), FID_0_68fd1e64);
  assert_int_equal(keys_feature_id(3, "68fd1e64", 8), FID_3_68fd1e64);
  assert_int_equal(keys_feature_id(0, "", 0), FID_0_EMPTY);
  assert_int_equal(keys_missing_id(7), MISSING_7);
  assert_int_equal(keys_shard(0, 10), 0);
  assert_int_equal(keys_shard(1, 10), JUMP_1_10);
  assert_int_equal(keys_shard(0xdeadbeefcafebabeull, 1000), JUMP_DEAD_1000);
  assert_int_equal(keys_shard(123456789, 1), 0);
}

static void test_field_separates_tokens(void **state) {
  (void)state;
  assert_true(keys_feature_id(1, "abc", 3) != keys_feature_id(2, "abc", 3));
  assert_true(keys_feature_id(1, "abc", 3) != keys_feature_id(1, "abd", 3));
  assert_true(keys_missing_id(1) != keys_feature_id(1, "", 0));
}

/* Over 1M feature ids, each of S shards holds within 2% of 1/S. */
static void test_shard_balance(void **state) {
  (void)state;
  const uint32_t shard_counts[] = {2, 3, 7, 16};
  for (size_t t = 0; t < sizeof(shard_counts) / sizeof(*shard_counts); t++) {
    uint32_t s = shard_counts[t];
    uint32_t hits[16] = {0};
    const uint32_t n = 1000000;
    for (uint32_t i = 0; i < n; i++) {
      char tok[16];
      int len = snprintf(tok, sizeof(tok), "%08x", i);
      hits[keys_shard(keys_feature_id(i % 26, tok, (size_t)len), s)]++;
    }
    for (uint32_t k = 0; k < s; k++) {
      double share = (double)hits[k] * s / n;
      if (fabs(share - 1) > 0.02)
        fail_msg("S=%u shard %u holds %.4f of its fair share", s, k, share);
    }
  }
}

/* Growing S to S+1 moves ~1/(S+1) of the keys, and only to the new shard. */
static void test_jump_moves_minimum(void **state) {
  (void)state;
  for (uint32_t s = 1; s < 12; s++) {
    const uint32_t n = 200000;
    uint32_t moved = 0;
    for (uint32_t i = 0; i < n; i++) {
      uint64_t key = keys_mix64(i);
      uint32_t a = keys_shard(key, s), b = keys_shard(key, s + 1);
      if (a != b) {
        assert_int_equal(b, s);
        moved++;
      }
    }
    double frac = (double)moved / n, want = 1.0 / (s + 1);
    if (fabs(frac - want) > 0.01)
      fail_msg("S=%u->%u moved %.4f of keys, expected %.4f", s, s + 1, frac,
               want);
  }
}

static void test_criteo_bucket(void **state) {
  (void)state;
  assert_int_equal(keys_criteo_bucket(0), 0);
  assert_int_equal(keys_criteo_bucket(1), 1);
  assert_int_equal(keys_criteo_bucket(2), 2);
  assert_int_equal(keys_criteo_bucket(-3), -3);
  assert_int_equal(keys_criteo_bucket(3), 1);     /* ln 3 = 1.0986; ^2 = 1.207 */
  assert_int_equal(keys_criteo_bucket(100), 21);  /* ln 100 = 4.605; ^2 = 21.2 */
  assert_int_equal(keys_criteo_bucket(1e6), 190); /* 13.8155^2 = 190.87 */
  assert_int_equal(keys_criteo_bucket(INFINITY), 503791);
  assert_int_equal(keys_criteo_bucket(NAN), 0);
}

static void test_db_key_order(void **state) {
  (void)state;
  uint8_t a[KEYS_DB_KEY_LEN], b[KEYS_DB_KEY_LEN];
  keys_db_key(1, 0xffffffffffffffffull, a);
  keys_db_key(2, 0, b);
  assert_true(memcmp(a, b, KEYS_DB_KEY_LEN) < 0); /* one table's rows together */
  keys_db_key(5, 0x100, a);
  keys_db_key(5, 0xff, b);
  assert_true(memcmp(a, b, KEYS_DB_KEY_LEN) > 0); /* fid order within a table */
  uint32_t t;
  uint64_t f;
  keys_db_key(0xabcdef01u, 0x0123456789abcdefull, a);
  assert_int_equal(keys_db_key_parse(a, KEYS_DB_KEY_LEN, &t, &f), 0);
  assert_int_equal(t, 0xabcdef01u);
  assert_int_equal(f, 0x0123456789abcdefull);
  assert_int_equal(keys_db_key_parse(a, 11, &t, &f), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stable_values),
      cmocka_unit_test(test_field_separates_tokens),
      cmocka_unit_test(test_shard_balance),
      cmocka_unit_test(test_jump_moves_minimum),
      cmocka_unit_test(test_criteo_bucket),
      cmocka_unit_test(test_db_key_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
