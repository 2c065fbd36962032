/* store: deterministic init, optimizers through the store, persistence,
 * admission, TTL, AMTL prefixes, dense Adam, checkpoints, iteration, and
 * the errors a person can meet (bad paths, schema changes, corrupt rows,
 * malformed pushes). A real RocksDB in a temporary directory. */
#include "pserver/store.h"

#include "store_testlib.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

static char root[64];

static int setup(void **state) {
  (void)state;
  temp_dir(root);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  rm_tree(root);
  return 0;
}

/* A fresh subdirectory path of root (not created). */
static const char *sub(const char *name) {
  static char buf[8][128];
  static int k;
  char *b = buf[k++ % 8];
  snprintf(b, 128, "%s/%s", root, name);
  return b;
}

static uint64_t key_of(int i) {
  return 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
}

static void test_unseen_rows_are_deterministic(void **state) {
  (void)state;
  enum { N = 200, D = 8 };
  struct store_table t = make_table(3, D, ROW_OPT_ADAM);
  uint64_t keys[N], rev[N];
  for (int i = 0; i < N; i++) {
    keys[i] = key_of(i);
    rev[N - 1 - i] = keys[i];
  }
  struct store *a = open_with(sub("det-a"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  struct store *b = open_with(sub("det-b"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  assert_non_null(a);
  assert_non_null(b);
  struct pulled pa, pb;
  assert_int_equal(pull_all(a, 3, D, N, keys, &pa), N * D);
  assert_int_equal(pull_all(b, 3, D, N, rev, &pb), N * D);
  double sq = 0;
  for (int i = 0; i < N; i++) {
    float init[D];
    assert_int_equal(store_init_values(a, 3, keys[i], init, D), 0);
    assert_int_equal(pa.p[i], D);
    assert_int_equal(pa.count[i], 0);
    assert_int_equal(pa.flags[i], 0);
    assert_memory_equal(pa.values + pa.off[i], init, sizeof(init));
    /* other arrival order, other store: the same numbers */
    assert_memory_equal(pb.values + pb.off[N - 1 - i], init, sizeof(init));
    for (int j = 0; j < D; j++)
      sq += (double)init[j] * init[j];
  }
  /* N(0, 0.1^2): mean square 0.01, and not a constant */
  assert_true(sq / (N * D) > 0.007 && sq / (N * D) < 0.013);
  assert_true(pa.values[0] != pa.values[1] && pa.values[0] != pa.values[D]);
  pulled_free(&pa);
  pulled_free(&pb);
  char err[256];
  assert_int_equal(store_close(a, err, sizeof(err)), 0);
  assert_int_equal(store_close(b, err, sizeof(err)), 0);

  /* Reopened: still the same (nothing was stored by a pull). */
  a = open_with(sub("det-a"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  assert_int_equal(pull_all(a, 3, D, N, keys, &pa), N * D);
  for (int i = 0; i < N; i++) {
    float init[D];
    store_init_values(a, 3, keys[i], init, D);
    assert_memory_equal(pa.values + pa.off[i], init, sizeof(init));
  }
  pulled_free(&pa);
  store_close(a, err, sizeof(err));

  /* Independent of D: a wider table with the same id and seed starts with
   * the same leading entries (what AMTL growth relies on). */
  struct store_table w = make_table(3, 3 * D, ROW_OPT_ADAM);
  struct store *c = open_with(sub("det-c"), &w, 1, STORE_WAL_ASYNC, 16, 0);
  float wide[3 * D], narrow[D];
  store_init_values(c, 3, keys[7], wide, 3 * D);
  a = open_with(sub("det-a"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  store_init_values(a, 3, keys[7], narrow, D);
  assert_memory_equal(wide, narrow, sizeof(narrow));
  store_close(a, err, sizeof(err));
  store_close(c, err, sizeof(err));
}

/* The double-precision recurrence of each optimizer for `steps` pushes of
 * the constant gradient g from w0 (default hyper-parameters). */
static double expect(enum row_opt opt, double w0, double g, int steps) {
  double w = w0, a = 0.1, m = 0, v = 0, z = 0, n = 0;
  for (int k = 1; k <= steps; k++) {
    switch (opt) {
    case ROW_OPT_SGD:
      w -= 0.01 * g;
      break;
    case ROW_OPT_ADAGRAD:
      a += g * g;
      w -= 0.05 * g / (sqrt(a) + 1e-10);
      break;
    case ROW_OPT_ADAM:
      m = 0.9 * m + 0.1 * g;
      v = 0.999 * v + 0.001 * g * g;
      w -= 0.01 * (m / (1 - pow(0.9, k))) /
           (sqrt(v / (1 - pow(0.999, k))) + 1e-8);
      break;
    case ROW_OPT_FTRL: {
      double sigma = (sqrt(n + g * g) - sqrt(n)) / 0.05;
      z += g - sigma * w;
      n += g * g;
      w = fabs(z) <= 0 ? 0 : -z / ((1 + sqrt(n)) / 0.05);
      break;
    }
    default:
      break;
    }
  }
  return w;
}

static void test_optimizers_through_store(void **state) {
  (void)state;
  enum { N = 20, D = 4, K = 3, STEPS = 15 };
  const enum row_opt opts[] = {ROW_OPT_SGD, ROW_OPT_ADAGRAD, ROW_OPT_ADAM,
                               ROW_OPT_FTRL};
  uint64_t keys[K] = {key_of(1), key_of(2), key_of(3)};
  float grads[K * D];
  for (int i = 0; i < K * D; i++)
    grads[i] = 0.05f * (float)(i - 5);
  for (size_t o = 0; o < sizeof(opts) / sizeof(*opts); o++) {
    struct store_table t = make_table(1, D, opts[o]);
    char name[32];
    snprintf(name, sizeof(name), "opt-%s", row_opt_name(opts[o]));
    struct store *s = open_with(sub(name), &t, 1, STORE_WAL_ASYNC, 16, 0);
    assert_non_null(s);
    float w0[K][D];
    for (int i = 0; i < K; i++)
      store_init_values(s, 1, keys[i], w0[i], D);
    char err[256];
    for (int step = 1; step <= STEPS; step++)
      assert_int_equal(store_push(s, 1, K, keys, NULL, grads, NULL, NULL, NULL,
                                  (uint64_t)step, err, sizeof(err)),
                       0);
    for (int reopen = 0; reopen < 2; reopen++) {
      struct pulled p;
      assert_int_equal(pull_all(s, 1, D, K, keys, &p), K * D);
      for (int i = 0; i < K; i++) {
        assert_int_equal(p.count[i], STEPS);
        for (int j = 0; j < D; j++)
          assert_float_equal(p.values[p.off[i] + j],
                             expect(opts[o], w0[i][j], grads[i * D + j], STEPS),
                             1e-5);
      }
      pulled_free(&p);
      /* persistence across close/reopen */
      assert_int_equal(store_close(s, err, sizeof(err)), 0);
      if (!reopen)
        s = open_with(sub(name), &t, 1, STORE_WAL_ASYNC, 16, 0);
    }
  }
}

static void test_admission(void **state) {
  (void)state;
  enum { D = 4 };
  struct store_table t = make_table(2, D, ROW_OPT_SGD);
  t.min_count = 3;
  struct store *s = open_with(sub("admit"), &t, 1, STORE_WAL_SYNC, 16, 0);
  assert_non_null(s);
  uint64_t k = key_of(10), k5 = key_of(11);
  float g[D] = {1, 2, 3, 4}, init[D];
  store_init_values(s, 2, k, init, D);
  uint32_t one = 1, click = 1, five = 5;
  char err[256];
  struct pulled p;
  /* unseen: zeros, pending, no stats */
  pull_all(s, 2, D, 1, &k, &p);
  assert_int_equal(p.p[0], D);
  assert_int_equal(p.flags[0], STORE_PULL_PENDING);
  for (int j = 0; j < D; j++)
    assert_true(p.values[j] == 0.0f);
  pulled_free(&p);
  for (int step = 1; step <= 2; step++) {
    assert_int_equal(store_push(s, 2, 1, &k, NULL, g, NULL, &one, &click,
                                (uint64_t)step, err, sizeof(err)),
                     0);
    pull_all(s, 2, D, 1, &k, &p);
    assert_int_equal(p.count[0], step);
    assert_int_equal(p.clicks[0], step);
    assert_int_equal(p.flags[0], STORE_PULL_PENDING);
    for (int j = 0; j < D; j++)
      assert_true(p.values[j] == 0.0f); /* no update while pending */
    pulled_free(&p);
  }
  /* a pending key is stored with its count only: 32 bytes */
  struct store_table_stats ts;
  uint64_t hist[D + 1];
  assert_int_equal(store_table_scan(s, 2, &ts, hist, err, sizeof(err)), 0);
  assert_int_equal(ts.rows, 1);
  assert_int_equal(ts.pending, 1);
  assert_int_equal(ts.value_bytes, ROW_HEADER_LEN);
  /* the third sighting admits it with the init values (gradient dropped) */
  store_push(s, 2, 1, &k, NULL, g, NULL, &one, NULL, 3, err, sizeof(err));
  pull_all(s, 2, D, 1, &k, &p);
  assert_int_equal(p.flags[0], 0);
  assert_int_equal(p.count[0], 3);
  assert_memory_equal(p.values, init, sizeof(init));
  pulled_free(&p);
  /* from now on it trains */
  store_push(s, 2, 1, &k, NULL, g, NULL, &one, NULL, 4, err, sizeof(err));
  pull_all(s, 2, D, 1, &k, &p);
  for (int j = 0; j < D; j++)
    assert_float_equal(p.values[j], init[j] - 0.01 * g[j], 1e-7);
  pulled_free(&p);
  /* five occurrences in one batch admit at once */
  store_push(s, 2, 1, &k5, NULL, g, NULL, &five, NULL, 4, err, sizeof(err));
  pull_all(s, 2, D, 1, &k5, &p);
  assert_int_equal(p.flags[0], 0);
  store_init_values(s, 2, k5, init, D);
  assert_memory_equal(p.values, init, sizeof(init));
  pulled_free(&p);
  struct store_stats st;
  store_stats(s, &st, err, sizeof(err));
  assert_int_equal(st.admitted, 2);
  store_close(s, err, sizeof(err));
}

static void test_ttl_expiry(void **state) {
  (void)state;
  enum { D = 4 };
  struct store_table t = make_table(5, D, ROW_OPT_SGD);
  t.ttl_steps = 10;
  struct store *s = open_with(sub("ttl"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  assert_non_null(s);
  uint64_t a = key_of(1), b = key_of(2), c = key_of(3);
  float g[D] = {1, 1, 1, 1};
  char err[256];
  store_push(s, 5, 1, &a, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err));
  store_push(s, 5, 1, &b, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err));
  store_push(s, 5, 1, &b, NULL, g, NULL, NULL, NULL, 8, err, sizeof(err));
  store_push(s, 5, 1, &b, NULL, g, NULL, NULL, NULL, 15, err, sizeof(err));
  store_push(s, 5, 1, &c, NULL, g, NULL, NULL, NULL, 20, err, sizeof(err));
  /* a: last seen at 1, now 20 > 1 + 10: reads as fresh. b: seen at 1, 8
   * and 15, never 10 steps apart: alive with count 3. */
  uint64_t ks[2] = {a, b};
  struct pulled p;
  pull_all(s, 5, D, 2, ks, &p);
  float init[D];
  store_init_values(s, 5, a, init, D);
  assert_int_equal(p.count[0], 0);
  assert_memory_equal(p.values, init, sizeof(init));
  assert_int_equal(p.count[1], 3);
  pulled_free(&p);
  /* the compaction filter removes it from disk */
  assert_int_equal(store_compact(s, err, sizeof(err)), 0);
  struct store_stats st;
  store_stats(s, &st, err, sizeof(err));
  assert_int_equal(st.expired, 1);
  struct store_table_stats ts;
  uint64_t hist[D + 1];
  store_table_scan(s, 5, &ts, hist, err, sizeof(err));
  assert_int_equal(ts.rows, 2);
  /* the TTL clock survives a restart: a is still gone, b still there */
  store_close(s, err, sizeof(err));
  s = open_with(sub("ttl"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  store_stats(s, &st, err, sizeof(err));
  assert_int_equal(st.max_step, 20);
  pull_all(s, 5, D, 2, ks, &p);
  assert_int_equal(p.count[0], 0);
  assert_int_equal(p.count[1], 3);
  pulled_free(&p);
  store_close(s, err, sizeof(err));
}

static void test_amtl_prefixes(void **state) {
  (void)state;
  enum { N = 100, D = 16 };
  struct store_table t = make_table(7, D, ROW_OPT_ADAM);
  t.amtl = 1;
  struct store *s = open_with(sub("amtl"), &t, 1, STORE_WAL_OFF, 16, 0);
  assert_non_null(s);
  uint64_t keys[N];
  uint16_t gp[N], np[N];
  static float g[N * D];
  for (int i = 0; i < N; i++) {
    keys[i] = key_of(i);
    gp[i] = D;
    np[i] = 4;
  }
  for (int i = 0; i < N * D; i++)
    g[i] = 0.01f * (float)(i % 7 - 3);
  char err[256];
  assert_int_equal(
      store_push(s, 7, N, keys, gp, g, np, NULL, NULL, 1, err, sizeof(err)), 0);
  struct store_table_stats ts4, ts8;
  uint64_t hist[D + 1];
  store_table_scan(s, 7, &ts4, hist, err, sizeof(err));
  assert_int_equal(hist[4], N);
  assert_int_equal(ts4.rows, N);
  assert_float_equal(ts4.mean_p, 4.0, 1e-9);
  assert_int_equal(ts4.value_bytes, N * row_size(4, ROW_OPT_ADAM));
  struct pulled p;
  assert_int_equal(pull_all(s, 7, D, N, keys, &p), N * 4);
  /* after one Adam step every entry moved by ~lr from its init */
  float init[D];
  store_init_values(s, 7, keys[5], init, D);
  for (int j = 0; j < 4; j++) {
    double gj = g[5 * D + j];
    double want = gj == 0 ? init[j] : init[j] - 0.01 * (gj > 0 ? 1 : -1);
    assert_float_equal(p.values[p.off[5] + j], want, 1e-5);
  }
  float kept[4];
  memcpy(kept, p.values + p.off[5], sizeof(kept));
  pulled_free(&p);

  /* Grow to 8 with a 4-float gradient: the head trains, the new tail is
   * exactly the deterministic init. */
  for (int i = 0; i < N; i++) {
    gp[i] = 4;
    np[i] = 8;
  }
  static float g4[N * 4];
  assert_int_equal(
      store_push(s, 7, N, keys, gp, g4, np, NULL, NULL, 2, err, sizeof(err)),
      0);
  assert_int_equal(pull_all(s, 7, D, N, keys, &p), N * 8);
  assert_memory_equal(p.values + p.off[5] + 4, init + 4, 4 * sizeof(float));
  pulled_free(&p);
  store_table_scan(s, 7, &ts8, hist, err, sizeof(err));
  assert_int_equal(hist[8], N);
  /* bytes per row (less the header) proportional to k */
  assert_int_equal((ts8.value_bytes - N * ROW_HEADER_LEN),
                   2 * (ts4.value_bytes - N * ROW_HEADER_LEN));
  /* shrink back to 2: the head survives */
  for (int i = 0; i < N; i++)
    np[i] = 2;
  store_push(s, 7, N, keys, gp, g4, np, NULL, NULL, 3, err, sizeof(err));
  assert_int_equal(pull_all(s, 7, D, N, keys, &p), N * 2);
  pulled_free(&p);
  store_close(s, err, sizeof(err));

  /* Warm-up: no shrinking before step 10, growth any time. */
  struct store_table w = make_table(8, D, ROW_OPT_SGD);
  w.amtl = 1;
  w.amtl_warmup_steps = 10;
  s = open_with(sub("amtl-warm"), &w, 1, STORE_WAL_ASYNC, 16, 0);
  uint16_t two = 2;
  float gz[D] = {0};
  store_push(s, 8, 1, keys, NULL, gz, &two, NULL, NULL, 5, err, sizeof(err));
  pull_all(s, 8, D, 1, keys, &p);
  assert_int_equal(p.p[0], D);
  pulled_free(&p);
  store_push(s, 8, 1, keys, NULL, gz, &two, NULL, NULL, 10, err, sizeof(err));
  pull_all(s, 8, D, 1, keys, &p);
  assert_int_equal(p.p[0], 2);
  pulled_free(&p);
  store_close(s, err, sizeof(err));
}

static void test_dense_adam(void **state) {
  (void)state;
  enum { N = 40000, STEPS = 5 }; /* 3 chunks, the last one partial */
  struct store_table t = make_table(1, 4, ROW_OPT_SGD);
  struct store *s = open_with(sub("dense"), &t, 1, STORE_WAL_ASYNC, 16, N);
  assert_non_null(s);
  assert_int_equal(store_dense_loaded(s), 0);
  float *w0 = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float)),
        *out = malloc(N * sizeof(float));
  for (int i = 0; i < N; i++) {
    w0[i] = 0.001f * (float)(i % 1000);
    g[i] = 0.1f * (float)((i % 5) - 2);
  }
  char err[256];
  assert_int_equal(store_dense_set(s, 0, N, w0, err, sizeof(err)), 0);
  for (int k = 0; k < STEPS; k++) {
    /* two halves, pushed by offset + length, as two workers would */
    assert_int_equal(store_dense_push(s, 0, 20000, g, err, sizeof(err)), 0);
    assert_int_equal(
        store_dense_push(s, 20000, N - 20000, g + 20000, err, sizeof(err)), 0);
  }
  assert_int_equal(store_dense_pull(s, 0, N, out, err, sizeof(err)), 0);
  for (int i = 0; i < N; i += 997) {
    double w = w0[i], m = 0, v = 0;
    for (int k = 1; k <= STEPS; k++) {
      m = 0.9 * m + 0.1 * g[i];
      v = 0.999 * v + 0.001 * (double)g[i] * g[i];
      w -= 0.01 * (m / (1 - pow(0.9, k))) /
           (sqrt(v / (1 - pow(0.999, k))) + 1e-8);
    }
    assert_float_equal(out[i], w, 1e-5);
  }
  assert_int_equal(store_dense_pull(s, N - 1, 2, out, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "outside"));
  store_close(s, err, sizeof(err));
  /* persisted with its Adam state: one more step continues the recurrence */
  s = open_with(sub("dense"), &t, 1, STORE_WAL_ASYNC, 16, N);
  assert_int_equal(store_dense_loaded(s), 1);
  store_dense_push(s, 0, N, g, err, sizeof(err));
  store_dense_pull(s, 0, N, out, err, sizeof(err));
  for (int i = 1; i < N; i += 1231) {
    double w = w0[i], m = 0, v = 0;
    for (int k = 1; k <= STEPS + 1; k++) {
      m = 0.9 * m + 0.1 * g[i];
      v = 0.999 * v + 0.001 * (double)g[i] * g[i];
      w -= 0.01 * (m / (1 - pow(0.9, k))) /
           (sqrt(v / (1 - pow(0.999, k))) + 1e-8);
    }
    assert_float_equal(out[i], w, 1e-5);
  }
  store_close(s, err, sizeof(err));
  /* a different dense size is refused */
  assert_null(open_with(sub("dense"), &t, 1, STORE_WAL_ASYNC, 16, N + 1));
  free(w0);
  free(g);
  free(out);
}

static void test_checkpoint(void **state) {
  (void)state;
  enum { N = 50, D = 8 };
  struct store_table t = make_table(4, D, ROW_OPT_ADAGRAD);
  /* WAL off: the pushes live only in the row cache until the checkpoint */
  struct store *s = open_with(sub("ck-src"), &t, 1, STORE_WAL_OFF, 16, 0);
  uint64_t keys[N];
  static float g[N * D];
  for (int i = 0; i < N; i++)
    keys[i] = key_of(i);
  for (int i = 0; i < N * D; i++)
    g[i] = (float)(i % 3) - 1.0f;
  char err[512];
  for (int step = 1; step <= 3; step++)
    store_push(s, 4, N, keys, NULL, g, NULL, NULL, NULL, (uint64_t)step, err,
               sizeof(err));
  struct pulled before, after;
  pull_all(s, 4, D, N, keys, &before);
  assert_int_equal(store_checkpoint(s, sub("ck-1"), err, sizeof(err)), 0);
  /* an existing directory is refused, with a message that says so */
  mkdir(sub("ck-exists"), 0755);
  assert_int_equal(store_checkpoint(s, sub("ck-exists"), err, sizeof(err)), -1);
  assert_non_null(strstr(err, "already exists"));
  assert_int_equal(store_checkpoint(s, sub("ck-1"), err, sizeof(err)), -1);
  /* the source goes on training, untouched by the checkpoint */
  store_push(s, 4, N, keys, NULL, g, NULL, NULL, NULL, 4, err, sizeof(err));
  store_close(s, err, sizeof(err));

  struct store *c = open_with(sub("ck-1"), &t, 1, STORE_WAL_OFF, 16, 0);
  assert_non_null(c);
  pull_all(c, 4, D, N, keys, &after);
  assert_memory_equal(before.values, after.values, N * D * sizeof(float));
  assert_memory_equal(before.count, after.count, N * sizeof(uint32_t));
  assert_int_equal(after.count[0], 3);
  pulled_free(&after);
  store_close(c, err, sizeof(err));
  s = open_with(sub("ck-src"), &t, 1, STORE_WAL_OFF, 16, 0);
  pull_all(s, 4, D, N, keys, &after);
  assert_int_equal(after.count[0], 4);
  assert_memory_not_equal(before.values, after.values, N * D * sizeof(float));
  pulled_free(&after);
  pulled_free(&before);
  store_close(s, err, sizeof(err));
}

static void test_iteration(void **state) {
  (void)state;
  enum { N = 300, D = 4 };
  struct store_table ts[2] = {make_table(1, D, ROW_OPT_ADAM),
                              make_table(2, D, ROW_OPT_ADAM)};
  struct store *s = open_with(sub("iter"), ts, 2, STORE_WAL_OFF, 16, 0);
  uint64_t keys[N];
  static float g[N * D];
  for (int i = 0; i < N; i++)
    keys[i] = key_of(i);
  char err[256];
  store_push(s, 1, N, keys, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err));
  store_push(s, 2, 10, keys, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err));
  struct store_iter *it = store_iter_new(s, 1, err, sizeof(err));
  assert_non_null(it);
  uint64_t fid, prev = 0;
  struct row r;
  int n = 0, rc;
  while ((rc = store_iter_next(it, &fid, &r, err, sizeof(err))) == 1) {
    if (n)
      assert_true(fid > prev); /* feature-id order */
    prev = fid;
    assert_int_equal(r.p, D);
    assert_int_equal(r.opt_step, 1);
    struct pulled p;
    pull_all(s, 1, D, 1, &fid, &p);
    assert_memory_equal(p.values, r.values, D * sizeof(float));
    pulled_free(&p);
    n++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(n, N); /* table 2's rows are not included */
  store_iter_free(it);
  assert_null(store_iter_new(s, 99, err, sizeof(err)));
  store_close(s, err, sizeof(err));
}

static void test_bad_paths_and_options(void **state) {
  (void)state;
  struct store_table t = make_table(1, 4, ROW_OPT_SGD);
  char err[512];
  struct store_options o;
  store_options_defaults(&o);
  o.tables = &t;
  o.ntables = 1;
  o.memory_mb = 16;
  /* a file where the directory should be */
  FILE *f = fopen(sub("a-file"), "w");
  assert_non_null(f);
  fclose(f);
  assert_null(store_open(sub("a-file"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "not a directory"));
  /* below a file */
  assert_null(store_open(sub("a-file/db"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "a-file/db"));
  /* a read-only place (root ignores mode bits, not a read-only fs) */
  assert_null(store_open("/proc/maskps-no-such/db", &o, err, sizeof(err)));
  assert_non_null(strstr(err, "/proc/maskps-no-such/db"));
  /* a missing parent */
  assert_null(store_open(sub("no/such/parent"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "cannot open RocksDB"));
  /* bad options */
  struct store_table bad = t;
  bad.dim = 0;
  o.tables = &bad;
  assert_null(store_open(sub("opts"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "dim 0"));
  bad = t;
  bad.opt.beta1 = 1.5f;
  assert_null(store_open(sub("opts"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "beta1"));
  o.tables = &t;
  o.memory_mb = 1;
  assert_null(store_open(sub("opts"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "memory_mb"));
  /* a table whose schema changed since the store was created */
  o.memory_mb = 16;
  struct store *s = store_open(sub("schema"), &o, err, sizeof(err));
  assert_non_null(s);
  store_close(s, err, sizeof(err));
  struct store_table t8 = make_table(1, 8, ROW_OPT_SGD);
  o.tables = &t8;
  assert_null(store_open(sub("schema"), &o, err, sizeof(err)));
  assert_non_null(strstr(err, "was created with dim=4 opt=sgd"));
}

static void test_corrupt_rows_and_bad_pushes(void **state) {
  (void)state;
  enum { D = 4 };
  struct store_table t = make_table(6, D, ROW_OPT_SGD);
  struct store *s = open_with(sub("corrupt"), &t, 1, STORE_WAL_ASYNC, 16, 0);
  uint64_t good = key_of(1), bad = key_of(2);
  float g[2 * D] = {1, 1, 1, 1, 1, 1, 1, 1};
  char err[512];
  store_push(s, 6, 1, &good, NULL, g, NULL, NULL, NULL, 1, err, sizeof(err));
  struct pulled ref;
  pull_all(s, 6, D, 1, &good, &ref);

  /* garbage bytes behind the store's back */
  const char junk[7] = "garbage";
  assert_int_equal(
      store_debug_put_raw(s, 6, bad, junk, sizeof(junk), err, sizeof(err)), 0);
  uint64_t both[2] = {good, bad};
  struct pulled p;
  assert_int_equal(pull_all(s, 6, D, 2, both, &p), -1);
  pulled_free(&p);
  struct store_pull_out out = {ref.p, ref.count, ref.clicks, NULL, ref.values};
  assert_int_equal(store_pull(s, 6, 2, both, &out, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "key 0x"));
  assert_non_null(strstr(err, "shorter than"));
  assert_int_equal(
      store_push(s, 6, 2, both, NULL, g, NULL, NULL, NULL, 2, err, sizeof(err)),
      -1);
  /* a well-formed row of another optimizer */
  uint8_t buf[256];
  float v[D] = {0}, st[2 * D] = {0};
  struct row r = {.opt = ROW_OPT_ADAM, .p = D, .values = v, .state = st};
  size_t n = row_encode(&r, buf, sizeof(buf));
  store_debug_put_raw(s, 6, bad, buf, n, err, sizeof(err));
  assert_int_equal(store_pull(s, 6, 1, &bad, &out, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "opt=adam"));

  /* malformed pushes change nothing */
  uint64_t dup[2] = {good, good};
  assert_int_equal(
      store_push(s, 6, 2, dup, NULL, g, NULL, NULL, NULL, 3, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "twice"));
  uint16_t np = 2;
  assert_int_equal(
      store_push(s, 6, 1, &good, NULL, g, &np, NULL, NULL, 3, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "not amtl"));
  uint16_t gp = D + 1;
  assert_int_equal(
      store_push(s, 6, 1, &good, &gp, g, NULL, NULL, NULL, 3, err, sizeof(err)),
      -1);
  assert_int_equal(store_push(s, 99, 1, &good, NULL, g, NULL, NULL, NULL, 3,
                              err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "unknown table 99"));
  pull_all(s, 6, D, 1, &good, &p);
  assert_memory_equal(p.values, ref.values, D * sizeof(float));
  assert_int_equal(p.count[0], 1);
  pulled_free(&p);
  pulled_free(&ref);
  store_close(s, err, sizeof(err));
}

/* Lazy decay and the DIN term through the store: last_step and count live
 * in the row, so they survive a restart. */
static void test_lazy_decay_through_store(void **state) {
  (void)state;
  enum { D = 4 };
  struct store_table t = make_table(9, D, ROW_OPT_SGD);
  t.opt.lr = 0.1f;
  t.opt.weight_decay = 0.5f;
  t.opt.lazy_decay = 1;
  t.opt.freq_l2 = 0.2f;
  struct store *s = open_with(sub("decay"), &t, 1, STORE_WAL_SYNC, 16, 0);
  uint64_t k = key_of(3);
  float g[D] = {0.5f, -0.5f, 1.0f, 0.0f}, w0[D];
  uint32_t four = 4;
  store_init_values(s, 9, k, w0, D);
  char err[256];
  store_push(s, 9, 1, &k, NULL, g, NULL, &four, NULL, 1, err, sizeof(err));
  store_close(s, err, sizeof(err));
  s = open_with(sub("decay"), &t, 1, STORE_WAL_SYNC, 16, 0);
  store_push(s, 9, 1, &k, NULL, g, NULL, &four, NULL, 11, err, sizeof(err));
  struct pulled p;
  pull_all(s, 9, D, 1, &k, &p);
  for (int j = 0; j < D; j++) {
    /* step 1: count 4, one decay; step 11: count 8, ten decays. The DIN
     * term uses the weight before the decay. */
    double w1 = w0[j] * 0.95 - 0.1 * (g[j] + 0.2 / 4 * w0[j]);
    double w = w1 * pow(0.95, 10) - 0.1 * (g[j] + 0.2 / 8 * w1);
    assert_float_equal(p.values[j], w, 1e-6);
  }
  assert_int_equal(p.count[0], 8);
  pulled_free(&p);
  store_close(s, err, sizeof(err));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unseen_rows_are_deterministic),
      cmocka_unit_test(test_optimizers_through_store),
      cmocka_unit_test(test_admission),
      cmocka_unit_test(test_lazy_decay_through_store),
      cmocka_unit_test(test_ttl_expiry),
      cmocka_unit_test(test_amtl_prefixes),
      cmocka_unit_test(test_dense_adam),
      cmocka_unit_test(test_checkpoint),
      cmocka_unit_test(test_iteration),
      cmocka_unit_test(test_bad_paths_and_options),
      cmocka_unit_test(test_corrupt_rows_and_bad_pushes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
