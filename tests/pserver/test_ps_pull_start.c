/* The split pull of common/ps.h (ps_pull_start / ps_pull_finish /
 * ps_pull_abandon), through ps_net against two pservers (threads, tcp
 * loopback) and through ps_local over two in-process stores, fed the same
 * sequence:
 *
 *   ordering: a pull started before a push reads the rows as they were
 *     before that push (the worker's overlap of batch t+1's pull with batch
 *     t relies on it), while a blocking pull after the push reads them
 *     moved; several started pulls finish in any order, each with its own
 *     rows; net and local agree bit for bit;
 *   counts: every pull, started, abandoned or blocking, is one PULL request
 *     per pserver holding some of its keys (the pservers' STATS);
 *   abandon: an abandoned pull's replies are dropped, later calls get their
 *     own;
 *   faults: finishing a pull whose pserver went away fails with a message
 *     naming it, after the client's timeout, instead of hanging. */
#include "common/check.h"
#include "common/keys.h"
#include "common/ps.h"
#include "ps_testlib.h"
#include "pserver/ps_local.h"
#include "worker/ps_net.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define NS 2
#define N 300 /* keys per pull */
#define D 4
#define TABLE 5

/* Pulled rows of N keys. */
struct rows {
  uint16_t plen[N];
  uint32_t count[N], clicks[N];
  float vals[N * D];
  long total;
};

static struct ps_rows out_of(struct rows *r) {
  return (struct ps_rows){r->plen, r->count, r->clicks, r->vals, N * D};
}

static void assert_rows_equal(const struct rows *a, const struct rows *b) {
  assert_int_equal(a->total, b->total);
  assert_memory_equal(a->plen, b->plen, sizeof(a->plen));
  assert_memory_equal(a->count, b->count, sizeof(a->count));
  assert_memory_equal(a->vals, b->vals, (size_t)a->total * sizeof(float));
}

/* Every key's values differ between a and b (a push moved them all). */
static void assert_all_moved(const struct rows *a, const struct rows *b) {
  assert_int_equal(a->total, N * D);
  assert_int_equal(b->total, N * D);
  for (size_t i = 0; i < N; i++) {
    bool moved = false;
    for (size_t j = 0; j < D; j++)
      moved |= a->vals[i * D + j] != b->vals[i * D + j];
    assert_true(moved);
  }
}

static void pull(struct ps *ps, const uint64_t *keys, struct rows *r) {
  char err[1024];
  struct ps_rows o = out_of(r);
  r->total = ps_pull(ps, TABLE, 0, N, keys, &o, err, sizeof(err));
  if (r->total < 0)
    fail_msg("%s: pull: %s", ps_name(ps), err);
}

static int start(struct ps *ps, const uint64_t *keys, struct rows *r) {
  char err[1024];
  struct ps_rows o = out_of(r);
  int h = ps_pull_start(ps, TABLE, 0, N, keys, &o, err, sizeof(err));
  if (h < 0)
    fail_msg("%s: pull start: %s", ps_name(ps), err);
  return h;
}

static void finish(struct ps *ps, int h, struct rows *r) {
  char err[1024];
  r->total = ps_pull_finish(ps, h, err, sizeof(err));
  if (r->total < 0)
    fail_msg("%s: pull finish: %s", ps_name(ps), err);
}

/* A push of gradient g (the same for every float) to every key. */
static void push(struct ps *ps, const uint64_t *keys, uint64_t step, float g) {
  static uint16_t glen[N];
  static float grads[N * D];
  for (size_t i = 0; i < N; i++)
    glen[i] = D;
  for (size_t i = 0; i < N * D; i++)
    grads[i] = g * (float)(1 + i % 7);
  struct ps_grads pg = {.table = TABLE,
                        .step = step,
                        .n = N,
                        .keys = keys,
                        .glen = glen,
                        .grads = grads};
  char err[1024];
  if (ps_push(ps, &pg, err, sizeof(err)))
    fail_msg("%s: push: %s", ps_name(ps), err);
}

/* The sequence, on one ps; r[] receives what every pull read:
 *   r0 blocking pull after push 1
 *   r1 started before push 2, finished after push 3
 *   r2 started after push 2 (before push 3), finished before r1
 *   r3 blocking pull after push 2 (= r2's rows)
 *   r4 blocking pull after push 3
 *   r5 started after an abandoned pull and before push 4
 * then PS_MAX_STARTED pulls at once and a blocking one after push 4.
 * Returns the number of pull requests it made per pserver. */
static unsigned run_sequence(struct ps *ps, const uint64_t *keys,
                             struct rows *r) {
  struct rows scratch;
  push(ps, keys, 1, 0.5f); /* admits every key (min_count 1) */
  pull(ps, keys, &r[0]);
  int h1 = start(ps, keys, &r[1]);
  push(ps, keys, 2, -0.25f);
  int h2 = start(ps, keys, &r[2]);
  pull(ps, keys, &r[3]);
  push(ps, keys, 3, 1.0f);
  finish(ps, h2, &r[2]); /* in the other order than started */
  finish(ps, h1, &r[1]);
  pull(ps, keys, &r[4]);
  /* abandoned: its replies must not land in a later call */
  int ha = start(ps, keys, &scratch);
  ps_pull_abandon(ps, ha);
  int h5 = start(ps, keys, &r[5]);
  push(ps, keys, 4, 0.75f);
  finish(ps, h5, &r[5]);
  /* the most pulls started at once, and a pull of no keys */
  int hs[PS_MAX_STARTED];
  struct rows many[PS_MAX_STARTED];
  for (int i = 0; i < PS_MAX_STARTED; i++)
    hs[i] = start(ps, keys, &many[i]);
  char err[512];
  struct ps_rows none = {NULL, NULL, NULL, NULL, 0};
  for (int i = PS_MAX_STARTED - 1; i >= 0; i--)
    finish(ps, hs[i], &many[i]);
  struct rows after4;
  pull(ps, keys, &after4);
  for (int i = 0; i < PS_MAX_STARTED; i++)
    assert_rows_equal(&many[i], &after4);
  assert_all_moved(&r[5], &after4);
  int h0 = ps_pull_start(ps, TABLE, 0, 0, keys, &none, err, sizeof(err));
  assert_true(h0 >= 0);
  assert_int_equal(ps_pull_finish(ps, h0, err, sizeof(err)), 0);
  return 8 + PS_MAX_STARTED; /* r0..r5, the abandoned one, after4, many[] */
}

static unsigned pulls_of(const char *json) {
  const char *p = strstr(json, "\"PULL\":");
  assert_non_null(p);
  return (unsigned)atoi(p + strlen("\"PULL\":"));
}

static void test_started_pull_ordering(void **state) {
  (void)state;
  struct store_table t = make_table(TABLE, D, ROW_OPT_SGD);
  char dirs[2 * NS][64];
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    ts[s] = (struct test_server){.dir = temp_dir(dirs[s]),
                                 .tables = &t,
                                 .ntables = 1,
                                 .rank = s,
                                 .S = NS,
                                 .W = 1,
                                 .wal = STORE_WAL_OFF};
    assert_int_equal(ts_start(&ts[s]), 0);
    eps[s] = ts[s].endpoint;
  }
  struct store *stores[NS];
  char err[1024];
  for (uint32_t s = 0; s < NS; s++) {
    struct store_options o = ts_options(&t, 1, 0, NS, s, STORE_WAL_OFF);
    stores[s] = store_open(temp_dir(dirs[NS + s]), &o, err, sizeof(err));
    if (!stores[s])
      fail_msg("store_open: %s", err);
  }
  struct ps_net_opts no = {
      .endpoints = eps, .nshards = NS, .timeout_ms = 20000, .retries = -1};
  struct ps *net = ps_net_new(&no, err, sizeof(err));
  if (!net)
    fail_msg("ps_net_new: %s", err);
  struct ps *local = ps_local_new(stores, NS, &t, 1, 0, err, sizeof(err));
  assert_non_null(local);

  uint64_t keys[N];
  for (size_t i = 0; i < N; i++)
    keys[i] = keys_mix64(i + 1);
  struct rows *rn = calloc(6, sizeof(struct rows));
  struct rows *rl = calloc(6, sizeof(struct rows));
  unsigned want = run_sequence(net, keys, rn);
  run_sequence(local, keys, rl);
  for (int i = 0; i < 6; i++)
    assert_rows_equal(&rn[i], &rl[i]); /* net == local, bit for bit */
  for (struct rows *r = rn; r; r = r == rn ? rl : NULL) {
    /* started before push 2: push 1's rows, though finished after push 3 */
    assert_rows_equal(&r[1], &r[0]);
    /* started after push 2: its rows, not push 3's */
    assert_rows_equal(&r[2], &r[3]);
    /* and the pushes did move every row in between */
    assert_all_moved(&r[0], &r[3]);
    assert_all_moved(&r[3], &r[4]);
    /* started before push 4: push 3's rows (not those of the abandoned
     * pull's replies, which were push 3's too, but came first) */
    assert_rows_equal(&r[5], &r[4]);
  }
  /* one PULL request per pserver and pull: both shards hold some of the
   * 300 keys */
  for (uint32_t s = 0; s < NS; s++) {
    char *json = ps_net_stats(net, s, err, sizeof(err));
    if (!json)
      fail_msg("stats: %s", err);
    assert_int_equal(pulls_of(json), want);
    free(json);
  }

  assert_int_equal(ps_net_shutdown(net, err, sizeof(err)), 0);
  for (uint32_t s = 0; s < NS; s++)
    assert_int_equal(ts_join(&ts[s]), 0);
  ps_free(net);
  ps_free(local);
  for (uint32_t s = 0; s < NS; s++) {
    assert_int_equal(store_close(stores[s], err, sizeof(err)), 0);
    rm_tree(dirs[s]);
    rm_tree(dirs[NS + s]);
  }
  free(rn);
  free(rl);
}

/* A pserver that goes away while a pull is started: finish fails naming
 * it, once the timeout (counted from finish at the earliest) and the
 * retries are spent; the client stays usable for the shard that lives. */
static void test_finish_after_pserver_gone(void **state) {
  (void)state;
  struct store_table t = make_table(TABLE, D, ROW_OPT_SGD);
  char dirs[NS][64];
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    ts[s] = (struct test_server){.dir = temp_dir(dirs[s]),
                                 .tables = &t,
                                 .ntables = 1,
                                 .rank = s,
                                 .S = NS,
                                 .W = 1,
                                 .wal = STORE_WAL_OFF};
    assert_int_equal(ts_start(&ts[s]), 0);
    eps[s] = ts[s].endpoint;
  }
  char err[1024];
  struct ps_net_opts no = {.endpoints = eps,
                           .nshards = NS,
                           .timeout_ms = 300,
                           .retries = 1,
                           .backoff_ms = 10};
  struct ps *net = ps_net_new(&no, err, sizeof(err));
  assert_non_null(net);
  uint64_t keys[N];
  for (size_t i = 0; i < N; i++)
    keys[i] = keys_mix64(i + 1);
  struct rows r;
  pull(net, keys, &r); /* both answer */
  /* pserver 1 stops before the pull reaches it */
  ts[1].stop = 1;
  assert_int_equal(ts_join(&ts[1]), 0);
  int h = start(net, keys, &r);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  long rc = ps_pull_finish(net, h, err, sizeof(err));
  clock_gettime(CLOCK_MONOTONIC, &b);
  double took = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
  print_message("finish without pserver 1: %.2f s: %s\n", took, err);
  assert_int_equal(rc, -1);
  assert_non_null(strstr(err, "did not answer PULL"));
  assert_non_null(strstr(err, eps[1]));
  assert_true(took >= 0.55 && took < 10); /* 2 attempts of 300 ms */
  /* pserver 0 still answers a pull of its own keys */
  uint64_t k0[N];
  size_t n0 = 0;
  for (size_t i = 0; i < N; i++)
    if (keys_shard(keys[i], NS) == 0)
      k0[n0++] = keys[i];
  struct ps_rows o = out_of(&r);
  assert_true(ps_pull(net, TABLE, 0, n0, k0, &o, err, sizeof(err)) >= 0);
  ts[0].stop = 1;
  assert_int_equal(ts_join(&ts[0]), 0);
  ps_free(net);
  for (uint32_t s = 0; s < NS; s++)
    rm_tree(dirs[s]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_started_pull_ordering),
      cmocka_unit_test(test_finish_after_pserver_gone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
