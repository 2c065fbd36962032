/* shuffle: the output is a permutation of the input with every example
 * intact, the order is a function of the seed, epochs and seeds differ, a
 * buffer of 1 is the identity, the first output is uniform over what the
 * buffer held (not the first input), and the memory arithmetic. */
#include "worker/shuffle.h"

#include "common/check.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define F 5
#define M 1000 /* examples per stream */

/* Example i: a varying number of fields, keys that name i and the field,
 * label and group from i, so a mangled copy is caught. */
static void make(uint32_t i, struct data_example *ex) {
  ex->nkeys = 1 + i % F;
  for (uint32_t k = 0; k < ex->nkeys; k++) {
    ex->keys[k] = (uint64_t)i * 1000 + k;
    if (ex->vals)
      ex->vals[k] = (float)i + 0.25f * (float)k;
  }
  ex->valued = ex->vals != NULL;
  ex->label = (float)(i % 2);
  ex->group = (uint64_t)i * 7 + 3;
}

/* The id of an output example, after checking all of it against make(). */
static uint32_t id_of(const struct data_example *ex) {
  uint32_t i = (uint32_t)(ex->keys[0] / 1000);
  assert_true(i < M);
  assert_int_equal(ex->nkeys, 1 + i % F);
  for (uint32_t k = 0; k < ex->nkeys; k++) {
    assert_int_equal(ex->keys[k], (uint64_t)i * 1000 + k);
    if (ex->vals)
      assert_true(ex->vals[k] == (float)i + 0.25f * (float)k);
  }
  assert_true(ex->valued == (ex->vals != NULL));
  assert_true(ex->label == (float)(i % 2));
  assert_int_equal(ex->group, (uint64_t)i * 7 + 3);
  return i;
}

/* Streams examples 0..n-1 through s (reset to seed) as the trainer does,
 * one example struct as input and output; ids[] gets the output order.
 * Returns the number of outputs. */
static size_t run(struct shuffle *s, uint64_t seed, uint32_t n, uint32_t *ids) {
  uint64_t keys[F];
  float vals[F];
  struct data_example ex = {.keys = keys, .vals = vals};
  size_t out = 0;
  shuffle_reset(s, seed);
  for (uint32_t i = 0; i < n; i++) {
    make(i, &ex);
    if (shuffle_add(s, &ex, &ex)) {
      assert_true(out < n);
      ids[out++] = id_of(&ex);
    }
  }
  while (shuffle_drain(s, &ex)) {
    assert_true(out < n);
    ids[out++] = id_of(&ex);
  }
  assert_int_equal(shuffle_held(s), 0);
  return out;
}

/* A fresh buffer of capacity cap over n examples. */
static size_t run_new(size_t cap, uint64_t seed, uint32_t n, uint32_t *ids) {
  struct shuffle *s = shuffle_new(cap, F);
  size_t got = run(s, seed, n, ids);
  shuffle_free(s);
  return got;
}

static void assert_permutation(const uint32_t *ids, size_t n) {
  unsigned char seen[M] = {0};
  for (size_t i = 0; i < n; i++) {
    assert_true(ids[i] < n);
    assert_int_equal(seen[ids[i]], 0);
    seen[ids[i]] = 1;
  }
}

static size_t moved(const uint32_t *ids, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += ids[i] != i;
  return c;
}

/* Every example exactly once and intact, for buffers smaller than, equal
 * to and larger than the stream; an empty stream gives nothing. */
static void test_permutation(void **state) {
  (void)state;
  static const size_t caps[] = {1, 2, 7, 100, M - 1, M, M + 1, 5000};
  uint32_t ids[M];
  for (size_t c = 0; c < ARRAY_LEN(caps); c++) {
    assert_int_equal(run_new(caps[c], 42, M, ids), M);
    assert_permutation(ids, M);
    if (caps[c] > 1)
      assert_true(moved(ids, M) > M / 2);
  }
  assert_int_equal(run_new(10, 42, 0, ids), 0);
  assert_int_equal(run_new(10, 42, 3, ids), 3);
  assert_permutation(ids, 3);
}

/* Buffer 1: each example leaves when the next arrives, so the order is the
 * input order. */
static void test_buffer_one_is_identity(void **state) {
  (void)state;
  uint32_t ids[M];
  assert_int_equal(run_new(1, 99, M, ids), M);
  assert_int_equal(moved(ids, M), 0);
}

/* The same seed gives the same order (also after a reset that drops what
 * a stopped pass left held); other epochs, seeds and ranks give others. */
static void test_seeds(void **state) {
  (void)state;
  static uint32_t a[M], b[M];
  uint64_t seed = shuffle_seed(7, 1, 0);
  run_new(64, seed, M, a);
  struct shuffle *s = shuffle_new(64, F);
  /* a pass cut short: 100 examples in, some held */
  uint64_t keys[F];
  struct data_example ex = {.keys = keys};
  shuffle_reset(s, 1);
  for (uint32_t i = 0; i < 100; i++) {
    make(i, &ex);
    shuffle_add(s, &ex, &ex);
  }
  assert_int_equal(shuffle_held(s), 64);
  run(s, seed, M, b);
  assert_memory_equal(a, b, sizeof(a));

  const uint64_t others[] = {shuffle_seed(7, 2, 0), shuffle_seed(8, 1, 0),
                             shuffle_seed(7, 1, 1)};
  for (size_t i = 0; i < ARRAY_LEN(others); i++) {
    assert_true(others[i] != seed);
    run(s, others[i], M, b);
    assert_permutation(b, M);
    size_t differ = 0;
    for (size_t k = 0; k < M; k++)
      differ += a[k] != b[k];
    assert_true(differ > M / 2);
  }
  shuffle_free(s);
}

/* Where the first output comes from, over many seeds: the first one is
 * drawn from what the buffer holds, so with capacity cap over n examples
 * it is uniform over the first min(cap, n). The mean of 2000 draws is
 * within ±5 of the uniform mean (its standard deviation is ~0.65 for 100
 * values) and each tenth of the range gets 200 ± 60 (sd ~13): loose enough
 * for any decent generator, while the identity (always 0) fails both. */
static void first_output_uniform(size_t cap, uint32_t n) {
  enum { TRIALS = 2000 };
  uint32_t range = cap < n ? (uint32_t)cap : n;
  CHECK(range == 100, "the bounds below are for 100 values");
  struct shuffle *s = shuffle_new(cap, F);
  static uint32_t ids[M];
  double sum = 0;
  int bins[10] = {0};
  for (uint64_t t = 1; t <= TRIALS; t++) {
    run(s, shuffle_seed(t, 1, 0), n, ids);
    assert_true(ids[0] < range);
    sum += ids[0];
    bins[ids[0] / 10]++;
  }
  shuffle_free(s);
  double mean = sum / TRIALS;
  print_message("cap %zu n %u: mean first id %.2f (uniform: 49.5)\n", cap, n,
                mean);
  assert_true(mean > 44.5 && mean < 54.5);
  for (int b = 0; b < 10; b++)
    assert_true(bins[b] > 140 && bins[b] < 260);
}

static void test_first_output_not_biased(void **state) {
  (void)state;
  first_output_uniform(100, M);    /* while streaming */
  first_output_uniform(1000, 100); /* all of it from the drain */
}

/* An array the input leaves NULL comes out NULL; the caller's arrays get
 * the copies otherwise, and the input's own memory is not kept. */
static void test_copies(void **state) {
  (void)state;
  struct shuffle *s = shuffle_new(2, F);
  shuffle_reset(s, 5);
  struct data_example none = {.label = 1, .group = 9};
  uint64_t in_keys[F], out_keys[F];
  struct data_example in = {.keys = in_keys}, out = {.keys = out_keys};
  assert_int_equal(shuffle_add(s, &none, &out), 0);
  make(3, &in);
  assert_int_equal(shuffle_add(s, &in, &out), 0);
  memset(in_keys, 0xff, sizeof(in_keys)); /* the buffer has its own copy */
  int got_none = 0, got_three = 0;
  while (shuffle_drain(s, &out)) {
    if (!out.keys) {
      assert_int_equal(out.nkeys, 0);
      assert_int_equal(out.group, 9);
      got_none++;
      out.keys = out_keys;
    } else {
      assert_ptr_equal(out.keys, out_keys);
      assert_int_equal(id_of(&out), 3);
      got_three++;
    }
  }
  assert_int_equal(got_none, 1);
  assert_int_equal(got_three, 1);
  shuffle_free(s);
}

/* Bytes per held example: the struct, a slot id and 8 bytes per field;
 * shuffle_check refuses what does not fit the limit, with the sizes. */
static void test_memory(void **state) {
  (void)state;
  uint64_t per = sizeof(struct data_example) + 4 + (8 + 4) * 39;
  uint64_t b = shuffle_bytes(1000000, 39);
  assert_true(b >= 1000001 * per && b < 1000001 * per + 4096);
  assert_true(per == 520); /* the header's figure for Criteo */
  char err[256] = "";
  assert_int_equal(shuffle_check(1000000, 39, b, err, sizeof(err)), 0);
  assert_int_equal(shuffle_check(1000000, 39, b - 1, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "1000000 examples of 39 fields need 0.48 GiB"));
  assert_int_equal(shuffle_check(16777216, 39, 4ull << 30, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "8.13 GiB, over the limit of 4.00 GiB"));
  assert_int_equal(shuffle_check(UINT32_MAX, 1, UINT64_MAX, err, sizeof(err)),
                   -1);
  assert_true(shuffle_memory_limit() > (1ull << 20));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_permutation),
      cmocka_unit_test(test_buffer_one_is_identity),
      cmocka_unit_test(test_seeds),
      cmocka_unit_test(test_first_output_not_biased),
      cmocka_unit_test(test_copies),
      cmocka_unit_test(test_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
