/* batch: de-duplication in first-seen order, ragged pull -> rows -> E and
 * dE -> per-key ragged gradients, where nothing beyond a key's prefix is
 * ever pushed. */
#include "worker/batch.h"

#include "common/keys.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void add(struct batch *b, float label, uint64_t group, uint32_t n,
                const uint64_t *keys) {
  uint64_t k[16];
  memcpy(k, keys, n * sizeof(uint64_t));
  struct data_example ex = {
      .label = label, .group = group, .nkeys = n, .keys = k};
  batch_add(b, &ex);
}

static void test_dedup(void **state) {
  (void)state;
  const uint32_t ids[] = {0};
  const int dims[] = {4};
  struct batch *b = batch_new(4, 3, 1, ids, dims);
  add(b, 1, 11, 3, (const uint64_t[]){500, 7, 500});
  add(b, 0, 12, 3, (const uint64_t[]){7, 9, 500});
  add(b, 1, 13, 2, (const uint64_t[]){9, 42}); /* field 2 missing */
  assert_int_equal(b->B, 3);
  assert_int_equal(b->U, 4);
  const uint64_t want_keys[] = {500, 7, 9, 42};
  for (int u = 0; u < 4; u++)
    assert_int_equal(b->keys[u], want_keys[u]);
  const int32_t want_idx[] = {0, 1, 0, 1, 2, 0, 2, 3, -1};
  for (int i = 0; i < 9; i++)
    assert_int_equal(b->idx[i], want_idx[i]);
  const uint32_t occ[] = {3, 2, 2, 1}, clk[] = {2, 1, 1, 1};
  for (int u = 0; u < 4; u++) {
    assert_int_equal(b->occ[u], occ[u]);
    assert_int_equal(b->occ_clicks[u], clk[u]);
  }
  assert_true(b->labels[0] == 1 && b->labels[1] == 0);
  assert_int_equal(b->groups[2], 13);
  /* Cleared, the same keys start over in the new order. */
  batch_clear(b);
  assert_int_equal(b->U, 0);
  add(b, 0, 0, 3, (const uint64_t[]){42, 42, 500});
  assert_int_equal(b->U, 2);
  assert_int_equal(b->keys[0], 42);
  assert_int_equal(b->keys[1], 500);
  assert_int_equal(b->occ[0], 2);
  assert_int_equal(b->occ_clicks[0], 0);
  batch_free(b);
}

/* Many keys with repeats (collisions in the open-addressing set), cleared
 * and refilled: the distinct keys and the map agree with a naive count. */
static void test_dedup_many(void **state) {
  (void)state;
  enum { B = 64, F = 10 };
  const uint32_t ids[] = {3};
  const int dims[] = {1};
  struct batch *b = batch_new(B, F, 1, ids, dims);
  uint64_t x = 99;
  for (int round = 0; round < 3; round++) {
    batch_clear(b);
    uint64_t all[B * F];
    for (int r = 0; r < B; r++) {
      uint64_t k[F];
      for (int f = 0; f < F; f++) {
        x = keys_mix64(x);
        k[f] = x % 300; /* ~300 distinct among 640: many repeats */
        all[r * F + f] = k[f];
      }
      add(b, (float)(r & 1), 0, F, k);
    }
    size_t distinct = 0;
    for (int i = 0; i < B * F; i++) {
      int seen = 0;
      for (int j = 0; j < i && !seen; j++)
        seen = all[j] == all[i];
      distinct += !seen;
      assert_int_equal(b->keys[b->idx[i]], all[i]);
    }
    assert_int_equal(b->U, distinct);
    uint64_t total = 0;
    for (size_t u = 0; u < b->U; u++)
      total += b->occ[u];
    assert_int_equal(total, B * F);
  }
  batch_free(b);
}

/* Pull as the store answers (ragged, one key not admitted), expand, gather,
 * scatter, pack: values and gradients in place, nothing past a prefix. */
static void test_ragged_round_trip(void **state) {
  (void)state;
  enum { D = 4 };
  const uint32_t ids[] = {5, 6};
  const int dims[] = {D, 1};
  struct batch *b = batch_new(3, 3, 2, ids, dims);
  add(b, 1, 0, 3, (const uint64_t[]){10, 20, 30});
  add(b, 0, 0, 3, (const uint64_t[]){20, 40, 10});
  assert_int_equal(b->U, 4); /* keys 10, 20, 30, 40 */
  struct ps_rows out;
  batch_pull_out(b, 0, &out);
  assert_true(out.vals_cap >= b->U * D);
  /* key 10: full row; 20: prefix 2; 30: not admitted; 40: prefix 1. */
  const uint16_t plen[] = {4, 2, 0, 1};
  const float vals[] = {1, 2, 3, 4, 5, 6, 7};
  memcpy(out.plen, plen, sizeof(plen));
  memcpy(out.vals, vals, sizeof(vals));
  /* garbage past the used floats must not leak into rows */
  for (size_t i = 7; i < out.vals_cap; i++)
    out.vals[i] = 99;
  batch_expand(b, 0);
  const float rows[4][D] = {
      {1, 2, 3, 4}, {5, 6, 0, 0}, {0, 0, 0, 0}, {7, 0, 0, 0}};
  for (int u = 0; u < 4; u++) {
    assert_int_equal(b->t[0].prefix[u], plen[u]);
    for (int j = 0; j < D; j++)
      assert_true(b->t[0].rows[u * D + j] == rows[u][j]);
  }
  float E[2 * 3 * D];
  batch_gather(b, 0, E);
  const int key_of[6] = {0, 1, 2, 1, 3, 0};
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < D; j++)
      assert_true(E[i * D + j] == rows[key_of[i]][j]);

  /* dE: every entry nonzero, so anything past a prefix would show. */
  float dE[2 * 3 * D];
  for (int i = 0; i < 2 * 3 * D; i++)
    dE[i] = (float)(i + 1);
  double sq = batch_scatter(b, 0, dE);
  /* key 10 at (0,0) and (1,2): slots 0 and 5 -> sums of dE rows 0 and 5;
   * key 20 at slots 1 and 3, first 2 entries; key 30 none; key 40 at slot
   * 4, first entry. */
  const float want[] = {1 + 21, 2 + 22, 3 + 23, 4 + 24, /* key 10 */
                        5 + 13, 6 + 14,                 /* key 20 */
                        17};                            /* key 40 */
  assert_int_equal(b->t[0].ngrads, 7);
  double wsq = 0;
  for (int i = 0; i < 7; i++) {
    assert_true(b->t[0].grads[i] == want[i]);
    wsq += (double)want[i] * want[i];
  }
  assert_true(fabs(sq - wsq) < 1e-9);
  struct ps_grads g;
  batch_push_in(b, 0, 77, &g);
  assert_int_equal(g.table, 5);
  assert_int_equal(g.step, 77);
  assert_int_equal(g.n, 4);
  assert_null(g.plen); /* no AMTL: keep every prefix */
  size_t sum = 0;
  for (size_t u = 0; u < g.n; u++) {
    assert_int_equal(g.glen[u], plen[u]);
    sum += g.glen[u];
  }
  assert_int_equal(sum, 7);
  assert_int_equal(g.count[0], 2);
  assert_int_equal(g.clicks[0], 1);
  assert_int_equal(g.count[2], 1);
  assert_int_equal(g.clicks[3], 0);
  batch_scale_grads(b, 0, 0.5f);
  assert_true(b->t[0].grads[6] == 8.5f);

  /* The 1-float table is gathered as w (B, F). */
  batch_pull_out(b, 1, &out);
  const uint16_t p1[] = {1, 1, 1, 1};
  memcpy(out.plen, p1, sizeof(p1));
  const float v1[] = {0.5f, -1, 2, 3};
  memcpy(out.vals, v1, sizeof(v1));
  batch_expand(b, 1);
  float w[6];
  batch_gather(b, 1, w);
  for (int i = 0; i < 6; i++)
    assert_true(w[i] == v1[key_of[i]]);
  batch_free(b);
}

/* AMTL lowers the prefix the forward uses below the stored one and asks
 * for a new stored prefix: gather masks, scatter packs only the new
 * prefix, the push carries newp. */
static void test_lowered_prefix(void **state) {
  (void)state;
  enum { D = 3 };
  const uint32_t ids[] = {0};
  const int dims[] = {D};
  struct batch *b = batch_new(2, 2, 1, ids, dims);
  add(b, 0, 0, 2, (const uint64_t[]){1, 2});
  add(b, 1, 0, 2, (const uint64_t[]){2, 1});
  struct ps_rows out;
  batch_pull_out(b, 0, &out);
  out.plen[0] = 3;
  out.plen[1] = 3;
  for (int i = 0; i < 6; i++)
    out.vals[i] = (float)(i + 1);
  batch_expand(b, 0);
  b->t[0].prefix[0] = 1; /* key 1 keeps 1 dim from now on */
  b->t[0].newp[0] = 1;
  b->t[0].has_newp = 1;
  float E[2 * 2 * D];
  batch_gather(b, 0, E);
  const float wantE[] = {1, 0, 0, 4, 5, 6, 4, 5, 6, 1, 0, 0};
  for (int i = 0; i < 12; i++)
    assert_true(E[i] == wantE[i]);
  float dE[12];
  for (int i = 0; i < 12; i++)
    dE[i] = 1;
  batch_scatter(b, 0, dE);
  assert_int_equal(b->t[0].ngrads, 1 + 3);
  const float want[] = {2, 2, 2, 2};
  for (int i = 0; i < 4; i++)
    assert_true(b->t[0].grads[i] == want[i]);
  struct ps_grads g;
  batch_push_in(b, 0, 1, &g);
  assert_non_null(g.plen);
  assert_int_equal(g.plen[0], 1);
  assert_int_equal(g.plen[1], 0);
  assert_int_equal(g.glen[0], 1);
  assert_int_equal(g.glen[1], 3);
  /* The next pull resets the AMTL view. */
  batch_expand(b, 0);
  assert_int_equal(b->t[0].prefix[0], 3);
  assert_int_equal(b->t[0].has_newp, 0);
  batch_free(b);
}

/* Values: E = value x row, and a row's gradient is the sum over its
 * occurrences of value x dE (closed form, one and several occurrences,
 * prefix masking kept); an example without values counts as 1s, also when
 * it comes before the first valued one; both tables scale. */
static void test_values_scale_rows_and_grads(void **state) {
  (void)state;
  enum { D = 3, F = 2 };
  const uint32_t ids[] = {0, 1};
  const int dims[] = {D, 1};
  struct batch *b = batch_new(3, F, 2, ids, dims);

  /* one example, one key with value v: E = v row, grad = v dE */
  uint64_t k1[F] = {10, 20};
  float x1[F] = {2.5f, 1};
  struct data_example ex = {
      .label = 1, .nkeys = F, .keys = k1, .vals = x1, .valued = true};
  batch_add(b, &ex);
  assert_int_equal(b->has_vals, 1);
  struct ps_rows out;
  batch_pull_out(b, 0, &out);
  out.plen[0] = 3;
  out.plen[1] = 3;
  const float r[] = {1, -2, 4, 0.5f, 0.25f, 8};
  memcpy(out.vals, r, sizeof(r));
  batch_expand(b, 0);
  float E[3 * F * D], dE[3 * F * D];
  batch_gather(b, 0, E);
  for (int j = 0; j < D; j++) {
    assert_true(E[j] == 2.5f * r[j]);
    assert_true(E[D + j] == r[D + j]);
  }
  for (int i = 0; i < F * D; i++)
    dE[i] = (float)(i + 1) * 0.5f;
  batch_scatter(b, 0, dE);
  for (int j = 0; j < D; j++) {
    assert_true(b->t[0].grads[j] == 2.5f * dE[j]);
    assert_true(b->t[0].grads[D + j] == dE[D + j]);
  }

  /* three examples: the first without values, key 10 three times with
   * values 1, 2.5, -0.5; key 20 (prefix 2) twice with 1 and 3 */
  batch_clear(b);
  assert_int_equal(b->has_vals, 0);
  uint64_t k0[F] = {10, 30};
  struct data_example plain = {.label = 0, .nkeys = F, .keys = k0};
  batch_add(b, &plain); /* vals NULL: binary */
  assert_int_equal(b->has_vals, 0);
  batch_add(b, &ex);
  uint64_t k2[F] = {10, 20};
  float x2[F] = {-0.5f, 3};
  struct data_example ex2 = {
      .label = 0, .nkeys = F, .keys = k2, .vals = x2, .valued = true};
  batch_add(b, &ex2);
  assert_int_equal(b->has_vals, 1);
  const float want_x[] = {1, 1, 2.5f, 1, -0.5f, 3};
  for (int i = 0; i < 3 * F; i++)
    assert_true(b->xvals[i] == want_x[i]);
  assert_int_equal(b->U, 3); /* keys 10, 30, 20 */
  batch_pull_out(b, 0, &out);
  const uint16_t plen[] = {3, 3, 2};
  const float v[] = {1, 2, 3, 4, 5, 6, 7, 8};
  memcpy(out.plen, plen, sizeof(plen));
  memcpy(out.vals, v, sizeof(v));
  batch_expand(b, 0);
  batch_gather(b, 0, E);
  const float rows[3][D] = {{1, 2, 3}, {4, 5, 6}, {7, 8, 0}};
  const int key_of[] = {0, 1, 0, 2, 0, 2};
  for (int i = 0; i < 3 * F; i++)
    for (int j = 0; j < D; j++)
      assert_true(E[i * D + j] == want_x[i] * rows[key_of[i]][j]);
  for (int i = 0; i < 3 * F * D; i++)
    dE[i] = (float)(i % 7) - 2.0f;
  double sq = batch_scatter(b, 0, dE);
  float want[3 * D] = {0};
  for (int i = 0; i < 3 * F; i++)
    for (int j = 0; j < plen[key_of[i]]; j++)
      want[key_of[i] * D + j] += want_x[i] * dE[i * D + j];
  /* packed: key 10 (3 floats), key 30 (3), key 20 (2) */
  assert_int_equal(b->t[0].ngrads, 8);
  const float *g = b->t[0].grads;
  double wsq = 0;
  for (int j = 0; j < 3; j++) {
    assert_true(fabsf(g[j] - want[j]) < 1e-6f);
    assert_true(fabsf(g[3 + j] - want[D + j]) < 1e-6f);
  }
  for (int j = 0; j < 2; j++)
    assert_true(fabsf(g[6 + j] - want[2 * D + j]) < 1e-6f);
  for (int i = 0; i < 8; i++)
    wsq += (double)g[i] * g[i];
  assert_true(fabs(sq - wsq) < 1e-9);
  /* key 10, entry 0 by hand: dE rows 0, 2, 4 at j = 0 are -2, 4, 3 */
  assert_true(fabsf(g[0] - (1 * -2.0f + 2.5f * 4.0f + -0.5f * 3.0f)) < 1e-6f);

  /* the 1-float LR weight table scales the same way */
  batch_pull_out(b, 1, &out);
  const uint16_t p1[] = {1, 1, 1};
  const float w1[] = {0.5f, -1, 2};
  memcpy(out.plen, p1, sizeof(p1));
  memcpy(out.vals, w1, sizeof(w1));
  batch_expand(b, 1);
  float w[3 * F], dw[3 * F];
  batch_gather(b, 1, w);
  for (int i = 0; i < 3 * F; i++) {
    assert_true(w[i] == want_x[i] * w1[key_of[i]]);
    dw[i] = 1;
  }
  batch_scatter(b, 1, dw);
  assert_true(b->t[1].grads[0] == 1 + 2.5f - 0.5f); /* key 10 */
  assert_true(b->t[1].grads[2] == 1 + 3.0f);        /* key 20 */
  batch_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_scale_rows_and_grads),
      cmocka_unit_test(test_dedup),
      cmocka_unit_test(test_dedup_many),
      cmocka_unit_test(test_ragged_round_trip),
      cmocka_unit_test(test_lowered_prefix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
