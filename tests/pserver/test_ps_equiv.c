/* Distributed sync mode matches embedded mode: one worker's sequence of
 * pulls, pushes, dense pulls/pushes and barriers through ps_net against two
 * pservers (threads, real tcp sockets) gives the same rows, stats and dense
 * values, bit for bit, as ps_local over two in-process stores fed the same
 * sequence. Tables cover what changes the wire: a plain Adam table, an AMTL
 * Adagrad table with admission (pending keys pull as plen 0) and ragged
 * prefixes; the dense vector does not divide evenly over the shards.
 *
 * And BSP with two workers (threads, each its own client, pservers in sync
 * mode): the pservers sum each step's pushes in worker-rank order and apply
 * them once at the barrier, so the rows equal, bit for bit, an embedded
 * store fed one push per step with the workers' gradients summed. */
#include "common/check.h"
#include "common/keys.h"
#include "common/ps.h"
#include "ps_testlib.h"
#include "pserver/ps_local.h"
#include "worker/ps_net.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NS 2
#define STEPS 25
#define BATCH 700  /* distinct keys per push */
#define POOL 4000  /* key universe per table */
#define DENSE 1001 /* odd: blocks of 501 and 500 */

static uint64_t rng_state = 42;
static uint64_t rnd(void) {
  rng_state += 0x9e3779b97f4a7c15ull;
  return keys_mix64(rng_state);
}
static float rnd_unit(void) {
  return (float)(rnd() >> 40) / (float)(1 << 24);
}

/* Key i of a table's pool: spread over the 64-bit space like real ids. */
static uint64_t pool_key(uint32_t table, uint64_t i) {
  return keys_mix64(i * 1000003u + table);
}

struct both {
  struct ps *net, *local;
};

/* Pulls through both and asserts identical output; returns the local
 * result in r (caller frees arrays). */
static void pull_both(struct both *b, uint32_t table, unsigned dim,
                      uint64_t step, size_t n, const uint64_t *keys,
                      struct ps_rows *r) {
  struct ps_rows q = {calloc(n, 2), calloc(n, 4), calloc(n, 4),
                      calloc(n * dim + 1, 4), n * dim};
  *r = (struct ps_rows){calloc(n, 2), calloc(n, 4), calloc(n, 4),
                        calloc(n * dim + 1, 4), n * dim};
  char err[1024];
  long a = ps_pull(b->net, table, step, n, keys, &q, err, sizeof(err));
  if (a < 0)
    fail_msg("net pull: %s", err);
  long c = ps_pull(b->local, table, step, n, keys, r, err, sizeof(err));
  if (c < 0)
    fail_msg("local pull: %s", err);
  assert_int_equal(a, c);
  assert_memory_equal(q.plen, r->plen, n * 2);
  assert_memory_equal(q.count, r->count, n * 4);
  assert_memory_equal(q.clicks, r->clicks, n * 4);
  if (a > 0)
    assert_memory_equal(q.vals, r->vals, (size_t)a * 4);
  free(q.plen);
  free(q.count);
  free(q.clicks);
  free(q.vals);
}

static void rows_free(struct ps_rows *r) {
  free(r->plen);
  free(r->count);
  free(r->clicks);
  free(r->vals);
}

static void test_net_equals_local(void **state) {
  (void)state;
  struct store_table tables[2];
  tables[0] = make_table(3, 8, ROW_OPT_ADAM);
  tables[1] = make_table(7, 16, ROW_OPT_ADAGRAD);
  tables[1].amtl = 1;
  tables[1].amtl_warmup_steps = 5;
  tables[1].min_count = 2;

  char dirs[2 * NS][64];
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    memset(&ts[s], 0, sizeof(ts[s]));
    ts[s] = (struct test_server){.dir = temp_dir(dirs[s]),
                                 .tables = tables,
                                 .ntables = 2,
                                 .rank = s,
                                 .S = NS,
                                 .W = 1,
                                 .dense_total = DENSE,
                                 .wal = STORE_WAL_OFF};
    assert_int_equal(ts_start(&ts[s]), 0);
    eps[s] = ts[s].endpoint;
  }
  struct store *stores[NS];
  for (uint32_t s = 0; s < NS; s++) {
    struct store_options o = ts_options(tables, 2, DENSE, NS, s, STORE_WAL_OFF);
    char err[512];
    stores[s] = store_open(temp_dir(dirs[NS + s]), &o, err, sizeof(err));
    if (!stores[s])
      fail_msg("store_open: %s", err);
  }
  char err[1024];
  struct both b;
  struct ps_net_opts no = {.endpoints = eps,
                           .nshards = NS,
                           .rank = 0,
                           .dense_total = DENSE,
                           .timeout_ms = 20000,
                           .retries = -1};
  b.net = ps_net_new(&no, err, sizeof(err));
  if (!b.net)
    fail_msg("ps_net_new: %s", err);
  b.local = ps_local_new(stores, NS, tables, 2, DENSE, err, sizeof(err));
  assert_non_null(b.local);
  assert_string_equal(ps_name(b.net), "net");
  assert_string_equal(ps_name(b.local), "local");

  uint64_t *keys = malloc(BATCH * 2 * sizeof(uint64_t));
  uint8_t *taken = calloc(POOL, 1);
  size_t pending_seen = 0, ragged_seen = 0;
  float dense_net[DENSE], dense_loc[DENSE], dg[DENSE];
  for (uint64_t step = 1; step <= STEPS; step++) {
    for (int ti = 0; ti < 2; ti++) {
      const struct store_table *t = &tables[ti];
      /* A batch of distinct keys, skewed towards the pool's start so keys
       * recur (admission, growing counts). */
      memset(taken, 0, POOL);
      size_t n = 0;
      while (n < BATCH) {
        uint64_t u = rnd() % POOL, v = rnd() % POOL;
        uint64_t i = u < v ? u : v;
        if (taken[i])
          continue;
        taken[i] = 1;
        keys[n++] = pool_key(t->id, i);
      }
      /* The pull also asks for a few keys twice. */
      for (size_t j = 0; j < 16; j++)
        keys[n + j] = keys[rnd() % n];
      struct ps_rows r;
      pull_both(&b, t->id, t->dim, step, n + 16, keys, &r);
      /* Gradients from the pulled values, prefix per key as pulled. */
      uint16_t *glen = malloc(n * 2), *plen = malloc(n * 2);
      uint32_t *cnt = malloc(n * 4), *clk = malloc(n * 4);
      float *g = malloc((n * t->dim + 1) * sizeof(float));
      size_t off = 0, goff = 0;
      for (size_t i = 0; i < n; i++) {
        glen[i] = r.plen[i];
        pending_seen += r.plen[i] == 0;
        ragged_seen += r.plen[i] != 0 && r.plen[i] != t->dim;
        for (unsigned j = 0; j < r.plen[i]; j++)
          g[goff++] = 0.5f * r.vals[off + j] + (rnd_unit() - 0.5f) * 0.01f;
        off += r.plen[i];
        plen[i] =
            t->amtl ? (uint16_t)(rnd() % 3 == 0 ? 0 : 1 + rnd() % t->dim) : 0;
        cnt[i] = 1 + (uint32_t)(rnd() % 3);
        clk[i] = (uint32_t)(rnd() % 2);
      }
      struct ps_grads pg = {.table = t->id,
                            .step = step,
                            .n = n,
                            .keys = keys,
                            .glen = glen,
                            .grads = g,
                            .plen = plen,
                            .count = cnt,
                            .clicks = clk};
      if (ps_push(b.net, &pg, err, sizeof(err)) < 0)
        fail_msg("net push: %s", err);
      if (ps_push(b.local, &pg, err, sizeof(err)) < 0)
        fail_msg("local push: %s", err);
      free(glen);
      free(plen);
      free(cnt);
      free(clk);
      free(g);
      rows_free(&r);
    }
    /* Dense: the whole vector, and a chunk across the block boundary. */
    assert_int_equal(
        ps_pull_dense(b.net, step, 0, DENSE, dense_net, err, sizeof(err)), 0);
    assert_int_equal(
        ps_pull_dense(b.local, step, 0, DENSE, dense_loc, err, sizeof(err)), 0);
    assert_memory_equal(dense_net, dense_loc, sizeof(dense_net));
    for (int i = 0; i < DENSE; i++)
      dg[i] = rnd_unit() - 0.5f;
    if (ps_push_dense(b.net, step, 0, DENSE, dg, err, sizeof(err)) < 0)
      fail_msg("net push_dense: %s", err);
    assert_int_equal(
        ps_push_dense(b.local, step, 0, DENSE, dg, err, sizeof(err)), 0);
    assert_int_equal(ps_push_dense(b.net, step, 490, 20, dg, err, sizeof(err)),
                     0);
    assert_int_equal(
        ps_push_dense(b.local, step, 490, 20, dg, err, sizeof(err)), 0);
    if (ps_barrier(b.net, step, err, sizeof(err)) < 0)
      fail_msg("net barrier: %s", err);
    assert_int_equal(ps_barrier(b.local, step, err, sizeof(err)), 0);
  }
  /* The sequence exercised what it is meant to. */
  assert_true(pending_seen > 100);
  assert_true(ragged_seen > 100);
  assert_int_equal(
      ps_pull_dense(b.net, 0, 480, 40, dense_net, err, sizeof(err)), 0);
  assert_int_equal(
      ps_pull_dense(b.local, 0, 480, 40, dense_loc, err, sizeof(err)), 0);
  assert_memory_equal(dense_net, dense_loc, 40 * sizeof(float));
  float nonzero = 0;
  for (int i = 0; i < 40; i++)
    nonzero += dense_net[i] != 0;
  assert_true(nonzero == 40);

  /* Every key of both pools, in one pull each: equal checksums. */
  uint64_t *all = malloc(POOL * sizeof(uint64_t));
  for (int ti = 0; ti < 2; ti++) {
    for (uint64_t i = 0; i < POOL; i++)
      all[i] = pool_key(tables[ti].id, i);
    struct ps_rows r;
    pull_both(&b, tables[ti].id, tables[ti].dim, STEPS + 1, POOL, all, &r);
    rows_free(&r);
  }
  /* Errors are the same kind on both: an unknown table, a bad range. */
  struct ps_rows r1 = {calloc(1, 2), calloc(1, 4), calloc(1, 4), calloc(16, 4),
                       16};
  assert_int_equal(ps_pull(b.net, 99, 0, 1, all, &r1, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "unknown table 99"));
  assert_int_equal(ps_pull(b.local, 99, 0, 1, all, &r1, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "unknown table 99"));
  rows_free(&r1);
  assert_int_equal(
      ps_pull_dense(b.net, 0, 1000, 2, dense_net, err, sizeof(err)), -1);
  assert_int_equal(
      ps_pull_dense(b.local, 0, 1000, 2, dense_net, err, sizeof(err)), -1);
  /* Setting dense values (across the block boundary) resets their Adam
   * state: a push after it moves both the same way, and the set floats
   * are exactly the given values before that push. */
  assert_int_equal(ps_set_dense(b.local, 495, 10, dg, err, sizeof(err)), 0);
  if (ps_set_dense(b.net, 495, 10, dg, err, sizeof(err)) < 0)
    fail_msg("net set_dense: %s", err);
  assert_int_equal(
      ps_pull_dense(b.net, 0, 495, 10, dense_net, err, sizeof(err)), 0);
  assert_memory_equal(dense_net, dg, 10 * sizeof(float));
  assert_int_equal(
      ps_push_dense(b.net, STEPS + 1, 0, DENSE, dg, err, sizeof(err)), 0);
  assert_int_equal(
      ps_push_dense(b.local, STEPS + 1, 0, DENSE, dg, err, sizeof(err)), 0);
  assert_int_equal(
      ps_pull_dense(b.net, 0, 0, DENSE, dense_net, err, sizeof(err)), 0);
  assert_int_equal(
      ps_pull_dense(b.local, 0, 0, DENSE, dense_loc, err, sizeof(err)), 0);
  assert_memory_equal(dense_net, dense_loc, sizeof(dense_net));

  /* Checkpoints through both: each shard into dir/shard-i. */
  char ck[2][64];
  temp_dir(ck[0]);
  temp_dir(ck[1]);
  char ckn[2][96];
  snprintf(ckn[0], sizeof(ckn[0]), "%s/step", ck[0]);
  snprintf(ckn[1], sizeof(ckn[1]), "%s/step", ck[1]);
  if (ps_checkpoint(b.net, STEPS, ckn[0], err, sizeof(err)) < 0)
    fail_msg("net checkpoint: %s", err);
  assert_int_equal(ps_checkpoint(b.local, STEPS, ckn[1], err, sizeof(err)), 0);
  for (uint32_t s = 0; s < NS; s++) {
    char p[160];
    snprintf(p, sizeof(p), "%s/shard-%u/CURRENT", ckn[0], s);
    assert_int_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/shard-%u/CURRENT", ckn[1], s);
    assert_int_equal(access(p, F_OK), 0);
  }

  assert_int_equal(ps_net_shutdown(b.net, err, sizeof(err)), 0);
  for (uint32_t s = 0; s < NS; s++)
    assert_int_equal(ts_join(&ts[s]), 0);
  ps_free(b.net);
  ps_free(b.local);
  for (uint32_t s = 0; s < NS; s++) {
    assert_int_equal(store_close(stores[s], err, sizeof(err)), 0);
    rm_tree(dirs[s]);
    rm_tree(dirs[NS + s]);
  }
  rm_tree(ck[0]);
  rm_tree(ck[1]);
  free(all);
  free(keys);
  free(taken);
}

/* ---- two workers, sync mode -------------------------------------------- */

#define NW 2
#define WSTEPS 8
#define WBATCH 300
#define WPOOL 500 /* small: the two workers' batches overlap a lot */

static float det_grad(uint32_t rank, uint64_t step, uint64_t key, unsigned j) {
  uint64_t h = keys_mix64(key ^ keys_mix64(step * 31 + rank * 7 + j));
  return (float)((int)(h % 2001) - 1000) * 1e-3f;
}

/* Worker `rank`'s push at `step` for table t: its keys (distinct), glen,
 * plen, count, clicks, gradients: all a pure function of (rank, step), so
 * the reference can rebuild them. Returns n. */
static size_t worker_batch(uint32_t rank, uint64_t step,
                           const struct store_table *t, uint64_t *keys,
                           uint16_t *glen, uint16_t *plen, uint32_t *cnt,
                           uint32_t *clk, float *g, size_t *goff) {
  uint8_t taken[WPOOL] = {0};
  uint64_t r = keys_mix64(step * 1000 + rank * 10 + t->id);
  size_t n = 0, f = 0;
  goff[0] = 0;
  while (n < WBATCH) {
    r = keys_mix64(r);
    uint64_t i = r % WPOOL;
    if (taken[i])
      continue;
    taken[i] = 1;
    keys[n] = pool_key(t->id, i);
    uint64_t h = keys_mix64(r);
    glen[n] = (uint16_t)(1 + h % t->dim);
    plen[n] =
        t->amtl ? (uint16_t)((h >> 8) % 3 ? 1 + (h >> 16) % t->dim : 0) : 0;
    cnt[n] = 1 + (uint32_t)((h >> 24) % 3);
    clk[n] = (uint32_t)((h >> 32) % 2);
    for (unsigned j = 0; j < glen[n]; j++)
      g[f++] = det_grad(rank, step, keys[n], j);
    goff[n + 1] = f;
    n++;
  }
  return n;
}

static void dense_grad(uint32_t rank, uint64_t step, float *dg) {
  for (int i = 0; i < DENSE; i++)
    dg[i] = det_grad(rank, step, (uint64_t)i, 0);
}

struct sync_worker {
  const char *const *eps;
  const struct store_table *tables;
  uint32_t rank;
  int rc;
  char err[1024];
};

static void *sync_worker_main(void *p) {
  struct sync_worker *w = p;
  struct ps_net_opts o = {.endpoints = w->eps,
                          .nshards = NS,
                          .rank = w->rank,
                          .dense_total = DENSE,
                          .timeout_ms = 20000,
                          .retries = -1};
  struct ps *ps = ps_net_new(&o, w->err, sizeof(w->err));
  w->rc = ps ? 0 : -1;
  uint64_t keys[WBATCH];
  uint16_t glen[WBATCH], plen[WBATCH];
  uint32_t cnt[WBATCH], clk[WBATCH];
  static _Thread_local float g[WBATCH * 16], dg[DENSE];
  size_t goff[WBATCH + 1];
  for (uint64_t step = 1; step <= WSTEPS && w->rc == 0; step++) {
    for (int ti = 0; ti < 2 && w->rc == 0; ti++) {
      const struct store_table *t = &w->tables[ti];
      size_t n =
          worker_batch(w->rank, step, t, keys, glen, plen, cnt, clk, g, goff);
      struct ps_grads pg = {.table = t->id,
                            .step = step,
                            .n = n,
                            .keys = keys,
                            .glen = glen,
                            .grads = g,
                            .plen = plen,
                            .count = cnt,
                            .clicks = clk};
      w->rc = ps_push(ps, &pg, w->err, sizeof(w->err));
    }
    dense_grad(w->rank, step, dg);
    if (w->rc == 0)
      w->rc = ps_push_dense(ps, step, 0, DENSE, dg, w->err, sizeof(w->err));
    if (w->rc == 0)
      w->rc = ps_barrier(ps, step, w->err, sizeof(w->err));
  }
  ps_free(ps);
  return NULL;
}

/* The reference: per step, the union of both workers' keys with gradients
 * summed in rank order (per entry, over the workers whose glen covers it),
 * counts and clicks summed, the largest prefix asked for; dense summed. */
static void reference_step(struct ps *local, uint64_t step,
                           const struct store_table *tables) {
  enum { CAP = NW * WBATCH };
  static uint64_t keys[NW][WBATCH], uk[CAP];
  static uint16_t glen[NW][WBATCH], plen[NW][WBATCH], ug[CAP], up[CAP];
  static uint32_t cnt[NW][WBATCH], clk[NW][WBATCH], uc[CAP], uck[CAP];
  static float g[NW][WBATCH * 16], ugr[CAP * 16];
  static size_t goff[NW][WBATCH + 1], n[NW];
  char err[1024];
  for (int ti = 0; ti < 2; ti++) {
    const struct store_table *t = &tables[ti];
    for (uint32_t r = 0; r < NW; r++)
      n[r] = worker_batch(r, step, t, keys[r], glen[r], plen[r], cnt[r], clk[r],
                          g[r], goff[r]);
    size_t m = 0, f = 0;
    for (uint32_t r = 0; r < NW; r++)
      for (size_t i = 0; i < n[r]; i++) {
        int seen = 0;
        for (uint32_t q = 0; q < r && !seen; q++)
          for (size_t k = 0; k < n[q] && !seen; k++)
            seen = keys[q][k] == keys[r][i];
        if (seen)
          continue; /* summed when its first worker was */
        uint16_t gl = 0, pl = 0;
        uint32_t c = 0, ck = 0;
        float *acc = ugr + f;
        for (unsigned e = 0; e < t->dim; e++)
          acc[e] = 0;
        unsigned covered = 0;
        for (uint32_t q = r; q < NW; q++)
          for (size_t k = 0; k < n[q]; k++) {
            if (keys[q][k] != keys[r][i])
              continue;
            for (unsigned e = 0; e < glen[q][k]; e++) {
              float v = g[q][goff[q][k] + e];
              acc[e] = e >= covered ? v : acc[e] + v;
            }
            covered = glen[q][k] > covered ? glen[q][k] : covered;
            gl = glen[q][k] > gl ? glen[q][k] : gl;
            pl = plen[q][k] > pl ? plen[q][k] : pl;
            c += cnt[q][k];
            ck += clk[q][k];
          }
        uk[m] = keys[r][i];
        ug[m] = gl;
        up[m] = pl;
        uc[m] = c;
        uck[m] = ck;
        f += gl;
        m++;
      }
    struct ps_grads pg = {.table = t->id,
                          .step = step,
                          .n = m,
                          .keys = uk,
                          .glen = ug,
                          .grads = ugr,
                          .plen = up,
                          .count = uc,
                          .clicks = uck};
    if (ps_push(local, &pg, err, sizeof(err)) < 0)
      fail_msg("reference push: %s", err);
  }
  float d0[DENSE], d1[DENSE];
  dense_grad(0, step, d0);
  dense_grad(1, step, d1);
  for (int i = 0; i < DENSE; i++)
    d0[i] = d0[i] + d1[i];
  assert_int_equal(ps_push_dense(local, step, 0, DENSE, d0, err, sizeof(err)),
                   0);
}

static void test_sync_two_workers(void **state) {
  (void)state;
  struct store_table tables[2];
  tables[0] = make_table(3, 8, ROW_OPT_ADAM);
  tables[1] = make_table(7, 16, ROW_OPT_ADAGRAD);
  tables[1].amtl = 1;
  tables[1].amtl_warmup_steps = 3;
  tables[1].min_count = 3;
  char dirs[2 * NS][64];
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    ts[s] = (struct test_server){.dir = temp_dir(dirs[s]),
                                 .tables = tables,
                                 .ntables = 2,
                                 .rank = s,
                                 .S = NS,
                                 .W = NW,
                                 .dense_total = DENSE,
                                 .wal = STORE_WAL_OFF,
                                 .sync = 1};
    assert_int_equal(ts_start(&ts[s]), 0);
    eps[s] = ts[s].endpoint;
  }
  struct sync_worker w[NW];
  pthread_t th[NW];
  for (uint32_t r = 0; r < NW; r++) {
    w[r] = (struct sync_worker){.eps = eps, .tables = tables, .rank = r};
    assert_int_equal(pthread_create(&th[r], NULL, sync_worker_main, &w[r]), 0);
  }
  for (uint32_t r = 0; r < NW; r++)
    pthread_join(th[r], NULL);
  for (uint32_t r = 0; r < NW; r++)
    if (w[r].rc != 0)
      fail_msg("worker %u: %s", r, w[r].err);

  /* The embedded reference fed the summed steps. */
  struct store *stores[NS];
  char err[1024];
  for (uint32_t s = 0; s < NS; s++) {
    struct store_options o = ts_options(tables, 2, DENSE, NS, s, STORE_WAL_OFF);
    stores[s] = store_open(temp_dir(dirs[NS + s]), &o, err, sizeof(err));
    assert_non_null(stores[s]);
  }
  struct ps *local =
      ps_local_new(stores, NS, tables, 2, DENSE, err, sizeof(err));
  for (uint64_t step = 1; step <= WSTEPS; step++)
    reference_step(local, step, tables);

  struct ps_net_opts no = {.endpoints = eps,
                           .nshards = NS,
                           .dense_total = DENSE,
                           .timeout_ms = 20000,
                           .retries = -1};
  struct both b = {ps_net_new(&no, err, sizeof(err)), local};
  assert_non_null(b.net);
  static uint64_t all[WPOOL];
  size_t admitted = 0;
  for (int ti = 0; ti < 2; ti++) {
    for (uint64_t i = 0; i < WPOOL; i++)
      all[i] = pool_key(tables[ti].id, i);
    struct ps_rows r;
    pull_both(&b, tables[ti].id, tables[ti].dim, WSTEPS + 1, WPOOL, all, &r);
    for (size_t i = 0; i < WPOOL; i++)
      admitted += r.plen[i] != 0 && r.count[i] > 0;
    rows_free(&r);
  }
  assert_true(admitted > WPOOL); /* rows of both tables were trained */
  float dn[DENSE], dl[DENSE];
  assert_int_equal(ps_pull_dense(b.net, 0, 0, DENSE, dn, err, sizeof(err)), 0);
  assert_int_equal(ps_pull_dense(local, 0, 0, DENSE, dl, err, sizeof(err)), 0);
  assert_memory_equal(dn, dl, sizeof(dn));

  assert_int_equal(ps_net_shutdown(b.net, err, sizeof(err)), 0);
  for (uint32_t s = 0; s < NS; s++)
    assert_int_equal(ts_join(&ts[s]), 0);
  ps_free(b.net);
  ps_free(local);
  for (uint32_t s = 0; s < NS; s++) {
    assert_int_equal(store_close(stores[s], err, sizeof(err)), 0);
    rm_tree(dirs[s]);
    rm_tree(dirs[NS + s]);
  }
}

/* The dense sharding rule: blocks tile the vector in order, lengths differ
 * by at most one. */
static void test_dense_blocks(void **state) {
  (void)state;
  const uint64_t totals[] = {0, 1, 7, 1001, 1u << 20};
  for (size_t a = 0; a < ARRAY_LEN(totals); a++)
    for (uint32_t ns = 1; ns <= 9; ns++) {
      uint64_t next = 0, lo = UINT64_MAX, hi = 0;
      for (uint32_t s = 0; s < ns; s++) {
        uint64_t off, len;
        ps_dense_block(totals[a], ns, s, &off, &len);
        assert_int_equal(off, next);
        next = off + len;
        lo = len < lo ? len : lo;
        hi = len > hi ? len : hi;
      }
      assert_int_equal(next, totals[a]);
      assert_true(hi - lo <= 1);
    }
  uint64_t off, len;
  ps_dense_block(1001, 2, 1, &off, &len);
  assert_int_equal(off, 501);
  assert_int_equal(len, 500);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dense_blocks),
      cmocka_unit_test(test_net_equals_local),
      cmocka_unit_test(test_sync_two_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
