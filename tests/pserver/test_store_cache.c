/* The hot-row cache: a hard byte bound, and no update lost by write-back,
 * first on the cache alone against a reference "disk", then through the
 * store with a table 5x larger than the cache's budget. */
#include "common/keys.h"
#include "pserver/cache.h"
#include "pserver/store.h"

#include "store_testlib.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* ---- the cache alone -------------------------------------------------- */

enum { NK = 2000 };

struct disk {
  uint8_t data[NK][64]; /* last written-back bytes per key */
  uint32_t len[NK];
  int writes;
};

static void to_disk(void *ctx, uint32_t table, uint64_t fid, const void *data,
                    size_t len) {
  struct disk *d = ctx;
  assert_int_equal(table, 9);
  assert_true(fid < NK && len <= 64);
  memcpy(d->data[fid], data, len);
  d->len[fid] = (uint32_t)len;
  d->writes++;
}

static void test_cache_bound_and_writeback(void **state) {
  (void)state;
  static struct disk disk;
  static uint8_t latest[NK][64];
  static uint32_t latest_len[NK];
  memset(&disk, 0, sizeof(disk));
  const size_t budget = 32 * 1024;
  struct cache *c = cache_new(budget, to_disk, &disk);
  uint64_t rng = 42;
  for (int op = 0; op < 50000; op++) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t fid = (rng >> 33) % NK;
    size_t len = 1 + (rng >> 20) % 64;
    if ((rng >> 8) % 4 == 0) {
      size_t l;
      const uint8_t *p = cache_get(c, 9, fid, &l);
      if (p) { /* a cached row is always the latest version */
        assert_int_equal(l, latest_len[fid]);
        assert_memory_equal(p, latest[fid], l);
      }
      continue;
    }
    for (size_t i = 0; i < len; i++)
      latest[fid][i] = (uint8_t)(op + i);
    latest_len[fid] = (uint32_t)len;
    /* every put is dirty: the cache is the only copy until written back */
    assert_int_equal(cache_put(c, 9, fid, latest[fid], len, 1), 1);
    struct cache_stats st;
    cache_get_stats(c, &st);
    assert_true(st.bytes <= budget);
  }
  struct cache_stats st;
  cache_get_stats(c, &st);
  assert_true(st.evicted > 1000); /* the bound was really hit */
  assert_true(st.hits > 0 && st.misses > 0);
  /* write back in bounded chunks (as the store commits them), then the
   * rest at once: every dirty row exactly once */
  size_t chunks = 0, got, total = 0;
  while (chunks < 3 && (got = cache_flush_some(c, 7)) > 0) {
    assert_true(got <= 7);
    total += got;
    chunks++;
  }
  assert_int_equal(total, 21);
  cache_get_stats(c, &st);
  assert_int_equal(st.dirty, st.rows - 21);
  cache_flush(c);
  assert_int_equal(cache_flush_some(c, 7), 0);
  /* now the disk holds the latest version of every key ever put */
  for (int k = 0; k < NK; k++) {
    assert_int_equal(disk.len[k], latest_len[k]);
    assert_memory_equal(disk.data[k], latest[k], latest_len[k]);
  }
  /* a row larger than the whole budget is refused, not cached */
  static uint8_t big[64 * 1024];
  assert_int_equal(cache_put(c, 9, 1, big, sizeof(big), 1), 0);
  size_t l;
  assert_null(cache_get(c, 9, 1, &l));
  cache_free(c);
  struct cache *none = cache_new(0, to_disk, &disk);
  assert_int_equal(cache_put(none, 9, 1, big, 8, 0), 0);
  cache_free(none);
}

/* ---- through the store ------------------------------------------------ */

static void test_table_five_times_the_cache(void **state) {
  (void)state;
  /* memory_mb 4: a 2 MiB row cache. 26000 Adam rows of D = 32 take
   * 26000 * 416 B = 10.3 MiB: 5x the cache. */
  enum { N = 26000, D = 32, BATCH = 1000, PASSES = 2 };
  char dir[64];
  temp_dir(dir);
  struct store_table t = make_table(1, D, ROW_OPT_ADAM);
  struct store *s = open_with(dir, &t, 1, STORE_WAL_OFF, 4, 0);
  assert_non_null(s);
  static uint64_t keys[N];
  static float g[BATCH * D];
  for (int i = 0; i < N; i++)
    keys[i] = keys_mix64((uint64_t)i);
  for (int i = 0; i < BATCH * D; i++)
    g[i] = (float)(i % 5) - 2.0f; /* per-entry sign of g, or 0 */
  char err[256];
  struct store_stats st;
  for (int pass = 1; pass <= PASSES; pass++)
    for (int b = 0; b < N; b += BATCH) {
      assert_int_equal(store_push(s, 1, BATCH, keys + b, NULL, g, NULL, NULL,
                                  NULL, (uint64_t)pass, err, sizeof(err)),
                       0);
      assert_int_equal(store_stats(s, &st, err, sizeof(err)), 0);
      assert_true(st.row_cache_bytes <= st.row_cache_budget);
      assert_true(st.block_cache_bytes <= st.block_cache_budget);
    }
  assert_int_equal(st.row_cache_budget, 2u << 20);
  assert_true(st.row_cache_rows < N / 4); /* most rows live on disk only */

  struct store_table_stats ts;
  static uint64_t hist[D + 1];
  assert_int_equal(store_table_scan(s, 1, &ts, hist, err, sizeof(err)), 0);
  assert_int_equal(ts.rows, N);
  assert_true(ts.value_bytes >= 5 * st.row_cache_budget);

  /* every row went through eviction and reload: after 2 Adam steps of a
   * constant g each entry moved by 2 lr sign(g) from its init */
  for (int round = 0; round < 2; round++) {
    for (int b = 0; b < N; b += 5 * BATCH) {
      struct pulled p;
      assert_int_equal(pull_all(s, 1, D, BATCH, keys + b, &p), BATCH * D);
      for (int i = 0; i < BATCH; i += 37) {
        float init[D];
        store_init_values(s, 1, keys[b + i], init, D);
        assert_int_equal(p.count[i], PASSES);
        for (int j = 0; j < D; j++) {
          float gj = g[i * D + j];
          double want = init[j] - PASSES * 0.01 *
                                      (gj > 0   ? 1
                                       : gj < 0 ? -1
                                                : 0);
          assert_float_equal(p.values[p.off[i] + j], want, 1e-5);
        }
      }
      pulled_free(&p);
    }
    store_stats(s, &st, err, sizeof(err));
    assert_true(st.row_cache_bytes <= st.row_cache_budget);
    assert_true(st.row_cache_hit_rate < 0.9);
    /* and again after a restart (write-back reached the disk) */
    assert_int_equal(store_close(s, err, sizeof(err)), 0);
    s = open_with(dir, &t, 1, STORE_WAL_OFF, 4, 0);
    assert_non_null(s);
  }
  store_close(s, err, sizeof(err));
  rm_tree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cache_bound_and_writeback),
      cmocka_unit_test(test_table_five_times_the_cache),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
