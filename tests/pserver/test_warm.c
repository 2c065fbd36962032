/* Warm start from old tables (pserver/warm.h) through the store's miss
 * hook: old rows for old keys (D' truncation / padding from the new init,
 * AMTL prefixes), init rows for new keys, rows copied forward so the old
 * directories can go, and clear errors for bad old paths. Also the store's
 * read-only open. */
#include "common/check.h"
#include "common/keys.h"
#include "pserver/table.h"
#include "pserver/warm.h"
#include "store_testlib.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

enum { N_OLD = 600, N_NEW = 200, D = 8, T = 3, S_OLD = 2 };

static char root[64];
static char old_dir[S_OLD][100];
static float old_vals[N_OLD][D]; /* what the old set serves */
static uint32_t old_count[N_OLD];

static uint64_t key_of(int i) {
  return keys_mix64((uint64_t)i * 0x9e3779b97f4a7c15ull + 5);
}

/* The old run: a 2-shard set of table T (D, adagrad, seed 1234), every
 * key pushed with a gradient that moves it off its init, plus manifests. */
static int setup(void **state) {
  (void)state;
  temp_dir(root);
  struct store_table t = make_table(T, D, ROW_OPT_ADAGRAD);
  struct store *st[S_OLD];
  for (int r = 0; r < S_OLD; r++) {
    snprintf(old_dir[r], sizeof(old_dir[r]), "%.63s/old-%d", root, r);
    st[r] = open_with(old_dir[r], &t, 1, STORE_WAL_OFF, 8, 0);
    assert_non_null(st[r]);
  }
  char err[512];
  for (int i = 0; i < N_OLD; i++) {
    uint64_t k = key_of(i);
    float g[D];
    for (int j = 0; j < D; j++)
      g[j] = 0.5f * (float)((i + 3 * j) % 7 - 3);
    uint32_t c = 1 + (uint32_t)i % 9;
    if (store_push(st[keys_shard(k, S_OLD)], T, 1, &k, NULL, g, NULL, &c, NULL,
                   5, err, sizeof(err)) < 0)
      fail_msg("%s", err);
  }
  for (int i = 0; i < N_OLD; i++) {
    uint64_t k = key_of(i);
    struct pulled p;
    assert_int_equal(pull_all(st[keys_shard(k, S_OLD)], T, D, 1, &k, &p), D);
    memcpy(old_vals[i], p.values, sizeof(float) * D);
    old_count[i] = p.count[0];
    pulled_free(&p);
  }
  for (int r = 0; r < S_OLD; r++) {
    assert_int_equal(store_close(st[r], err, sizeof(err)), 0);
    struct table_layout l = {S_OLD, (uint32_t)r, 1, &t};
    if (table_manifest_write(old_dir[r], &l, err, sizeof(err)) < 0)
      fail_msg("%s", err);
  }
  /* the old values really moved off the init (else the test proves
   * nothing about where they came from) */
  float init[D];
  store_table_init_values(&t, key_of(0), init, D);
  assert_true(memcmp(init, old_vals[0], sizeof(init)) != 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  rm_tree(root);
  return 0;
}

/* A new store in root/name with table nt, warm-started from the old set
 * (given in reverse order: the manifests' ranks decide). */
static struct store *open_warm(const char *name, const struct store_table *nt,
                               struct warm **wout) {
  char dir[200], err[512];
  snprintf(dir, sizeof(dir), "%s/%s", root, name);
  const char *dirs[S_OLD] = {old_dir[1], old_dir[0]};
  struct warm *w = warm_open(dirs, S_OLD, 4, err, sizeof(err));
  if (!w)
    fail_msg("warm_open: %s", err);
  struct store_options o;
  store_options_defaults(&o);
  o.tables = nt;
  o.ntables = 1;
  o.memory_mb = 8;
  o.warm_get = warm_get;
  o.warm_ctx = w;
  o.warm_free = warm_free;
  struct store *s = store_open(dir, &o, err, sizeof(err));
  if (!s)
    fail_msg("store_open: %s", err);
  *wout = w;
  return s;
}

/* Pulls old keys 0..N_OLD and new keys N_OLD..N_OLD+N_NEW from s (table
 * nt) and checks: old keys give the old values up to keep = min(D, p'),
 * then nt's init; new keys give nt's init with count 0. */
static void check_rows(struct store *s, const struct store_table *nt,
                       unsigned want_p_old) {
  enum { NK = N_OLD + N_NEW };
  uint64_t *keys = malloc(sizeof(uint64_t) * NK);
  for (int i = 0; i < NK; i++)
    keys[i] = key_of(i);
  struct pulled p;
  assert_true(pull_all(s, T, nt->dim, NK, keys, &p) > 0);
  float init[ROW_MAX_DIM];
  for (int i = 0; i < NK; i++) {
    const float *v = p.values + p.off[i];
    store_table_init_values(nt, keys[i], init, nt->dim);
    if (i < N_OLD) {
      assert_int_equal(p.p[i], want_p_old);
      assert_int_equal(p.count[i], old_count[i]);
      unsigned keep = want_p_old < D ? want_p_old : D;
      for (unsigned j = 0; j < keep; j++)
        assert_true(v[j] == old_vals[i][j]);
      for (unsigned j = keep; j < want_p_old; j++)
        assert_true(v[j] == init[j]);
    } else {
      assert_int_equal(p.p[i], nt->dim);
      assert_int_equal(p.count[i], 0);
      for (unsigned j = 0; j < nt->dim; j++)
        assert_true(v[j] == init[j]);
    }
  }
  pulled_free(&p);
  free(keys);
}

static void test_truncate_then_copied_forward(void **state) {
  (void)state;
  struct store_table nt = make_table(T, 4, ROW_OPT_ADAGRAD);
  nt.seed = 77; /* a different init: padding must come from the new one */
  struct warm *w;
  struct store *s = open_warm("trunc", &nt, &w);
  check_rows(s, &nt, 4);
  assert_int_equal(warm_rows_found(w), N_OLD);
  /* a second pull is served by the new store itself */
  check_rows(s, &nt, 4);
  assert_int_equal(warm_rows_found(w), N_OLD);
  char err[512];
  assert_int_equal(store_close(s, err, sizeof(err)), 0); /* frees w */

  /* copy the old set away, delete it, and reopen the new store without a
   * hook: the rows are there */
  char moved[S_OLD][120];
  for (int r = 0; r < S_OLD; r++) {
    snprintf(moved[r], sizeof(moved[r]), "%.100s.gone", old_dir[r]);
    assert_int_equal(rename(old_dir[r], moved[r]), 0);
  }
  char dir[200];
  snprintf(dir, sizeof(dir), "%s/trunc", root);
  s = open_with(dir, &nt, 1, STORE_WAL_ASYNC, 8, 0);
  assert_non_null(s);
  check_rows(s, &nt, 4);
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
  for (int r = 0; r < S_OLD; r++)
    assert_int_equal(rename(moved[r], old_dir[r]), 0);
}

static void test_pad_from_new_init(void **state) {
  (void)state;
  struct store_table nt = make_table(T, 12, ROW_OPT_ADAM); /* other opt */
  nt.seed = 77;
  struct warm *w;
  struct store *s = open_warm("pad", &nt, &w);
  check_rows(s, &nt, 12);
  /* pushes work on a warm row (fresh Adam state of 12 slots) */
  uint64_t k = key_of(1);
  float g[12] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  char err[512];
  assert_int_equal(
      store_push(s, T, 1, &k, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err)),
      0);
  struct pulled p;
  assert_int_equal(pull_all(s, T, 12, 1, &k, &p), 12);
  assert_true(p.values[0] < old_vals[1][0]); /* a positive gradient applied */
  pulled_free(&p);
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
}

static void test_fixed_to_amtl_keeps_full_rows(void **state) {
  (void)state;
  struct store_table nt = make_table(T, 12, ROW_OPT_ADAGRAD);
  nt.amtl = 1;
  struct warm *w;
  struct store *s = open_warm("amtl", &nt, &w);
  check_rows(s, &nt, D); /* p' = min(D_old, D') = 8: the old values only */
  char err[512];
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
  nt.dim = 5;
  s = open_warm("amtl5", &nt, &w);
  check_rows(s, &nt, 5);
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
}

static void test_bad_old_paths(void **state) {
  (void)state;
  char err[512], missing[200];
  snprintf(missing, sizeof(missing), "%s/no-such-run", root);
  const char *a[1] = {missing};
  assert_null(warm_open(a, 1, 4, err, sizeof(err)));
  assert_non_null(strstr(err, "no-such-run"));
  const char *half[1] = {old_dir[0]}; /* one shard of two */
  assert_null(warm_open(half, 1, 4, err, sizeof(err)));
  assert_non_null(strstr(err, "2-shard set"));
  const char *twice[2] = {old_dir[0], old_dir[0]};
  assert_null(warm_open(twice, 2, 4, err, sizeof(err)));
  assert_non_null(strstr(err, "both shard 0"));

  /* the config path: the message names the key */
  char yaml[400];
  snprintf(yaml, sizeof(yaml),
           "data:\n  train: [x.tsv]\nwarm_start:\n  tables: [%s]\n", missing);
  struct config *cfg =
      config_load_string(yaml, strlen(yaml), "test", err, sizeof(err));
  if (!cfg)
    fail_msg("config: %s", err);
  struct store_options o;
  store_options_defaults(&o);
  assert_int_equal(warm_attach(cfg, &o, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "warm_start.tables"));
  assert_non_null(strstr(err, "no-such-run"));
  assert_null(o.warm_get);
  config_free(cfg);
}

/* The store owns the context: a store_open that fails frees it (ASan's
 * leak check fails this test otherwise). */
static void test_failed_open_frees_context(void **state) {
  (void)state;
  char err[512];
  const char *dirs[S_OLD] = {old_dir[0], old_dir[1]};
  struct warm *w = warm_open(dirs, S_OLD, 4, err, sizeof(err));
  assert_non_null(w);
  struct store_table nt = make_table(T, 4, ROW_OPT_ADAGRAD);
  struct store_options o;
  store_options_defaults(&o);
  o.tables = &nt;
  o.ntables = 1;
  o.memory_mb = 8;
  o.create_if_missing = 0;
  o.warm_get = warm_get;
  o.warm_ctx = w;
  o.warm_free = warm_free;
  char dir[200];
  snprintf(dir, sizeof(dir), "%s/never", root);
  assert_null(store_open(dir, &o, err, sizeof(err)));
}

static void test_read_only_store_refuses_writes(void **state) {
  (void)state;
  struct store_table t = make_table(T, D, ROW_OPT_ADAGRAD);
  struct store_options o;
  store_options_defaults(&o);
  o.tables = &t;
  o.ntables = 1;
  o.memory_mb = 8;
  o.create_if_missing = 0;
  o.read_only = 1;
  char err[512];
  struct store *s = store_open(old_dir[0], &o, err, sizeof(err));
  if (!s)
    fail_msg("%s", err);
  uint64_t k = key_of(0);
  float g[D] = {0};
  assert_int_equal(
      store_push(s, T, 1, &k, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "read-only"));
  assert_null(store_bulk_new(s, err, sizeof(err)));
  uint8_t *raw;
  size_t len;
  int found = 0;
  for (int i = 0; i < N_OLD && !found; i++)
    found = store_get_raw(s, T, key_of(i), &raw, &len, err, sizeof(err));
  assert_int_equal(found, 1);
  assert_true(len == row_size(D, ROW_OPT_ADAGRAD));
  free(raw);
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
}

/* A plain run's store (no manifest: maskps train writes none) is read with
 * the schema its store recorded. */
static void test_store_without_manifest(void **state) {
  (void)state;
  struct store_table t = make_table(T, D, ROW_OPT_ADAGRAD);
  char plain[120], dir[140], err[512];
  snprintf(plain, sizeof(plain), "%.63s/plain", root);
  struct store *old = open_with(plain, &t, 1, STORE_WAL_ASYNC, 8, 0);
  assert_non_null(old);
  enum { K = 50 };
  uint64_t keys[K];
  float g[K * D];
  for (int i = 0; i < K; i++)
    keys[i] = key_of(i);
  for (int j = 0; j < K * D; j++)
    g[j] = 0.25f * (float)(j % 5 - 2);
  assert_int_equal(store_push(old, T, K, keys, NULL, g, NULL, NULL, NULL, 3,
                              err, sizeof(err)),
                   0);
  struct pulled want;
  assert_int_equal(pull_all(old, T, D, K, keys, &want), K * D);
  assert_int_equal(store_close(old, err, sizeof(err)), 0);

  struct store_table *sch;
  size_t n;
  assert_int_equal(store_read_schema(plain, &sch, &n, err, sizeof(err)), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sch[0].id, T);
  assert_int_equal(sch[0].dim, D);
  assert_int_equal(sch[0].opt.kind, ROW_OPT_ADAGRAD);
  free(sch);

  const char *dirs[1] = {plain};
  struct warm *w = warm_open(dirs, 1, 4, err, sizeof(err));
  if (!w)
    fail_msg("%s", err);
  struct store_options o;
  store_options_defaults(&o);
  o.tables = &t;
  o.ntables = 1;
  o.memory_mb = 8;
  o.warm_get = warm_get;
  o.warm_ctx = w;
  o.warm_free = warm_free;
  snprintf(dir, sizeof(dir), "%s.new", plain);
  struct store *s = store_open(dir, &o, err, sizeof(err));
  if (!s)
    fail_msg("%s", err);
  struct pulled got;
  assert_int_equal(pull_all(s, T, D, K, keys, &got), K * D);
  assert_memory_equal(got.values, want.values, sizeof(float) * K * D);
  assert_memory_equal(got.count, want.count, sizeof(uint32_t) * K);
  pulled_free(&got);
  pulled_free(&want);
  assert_int_equal(store_close(s, err, sizeof(err)), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_truncate_then_copied_forward),
      cmocka_unit_test(test_pad_from_new_init),
      cmocka_unit_test(test_fixed_to_amtl_keeps_full_rows),
      cmocka_unit_test(test_store_without_manifest),
      cmocka_unit_test(test_bad_old_paths),
      cmocka_unit_test(test_failed_open_frees_context),
      cmocka_unit_test(test_read_only_store_refuses_writes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
