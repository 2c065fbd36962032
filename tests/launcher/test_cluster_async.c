/* The pull overlap of async and ssp modes (train.prefetch, worker/train.h):
 * batch t+1's pulls are started during step t, before batch t's push.
 *
 *   what it reads: embedded runs (ps_local) with and without the overlap
 *     agree on step 1 and differ from step 2 on (batch 2 read the rows
 *     without batch 1's update); ssp with staleness 2 agrees with async up
 *     to step 2 and differs at step 3 (no pull started across the barrier
 *     of step 2);
 *   equivalence: one worker in async mode with the overlap against two
 *     pservers (threads, tcp loopback) gives the same per-step losses and
 *     dense parameters, bit for bit, as embedded mode: the overlapped pulls
 *     read exactly the rows an in-process pull at their start reads;
 *   counts: the pservers saw one PULL and one PUSH per pserver and step,
 *     also when train.max_steps ends a pass in the middle of an epoch (no
 *     pull started for a step that does not come);
 *   it trains: the loss falls and the test AUC is above chance. */
#include "common/config.h"
#include "common/gen.h"
#include "common/ps.h"
#include "launcher_testlib.h"
#include "pserver/ps_local.h"
#include "pserver/store.h"
#include "tests/pserver/ps_testlib.h"
#include "worker/nn/params.h"
#include "worker/ps_net.h"
#include "worker/train.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define ROWS 3000 /* training rows: 24 steps of 128 per epoch */
#define MAX_STEPS 64
#define NS 2 /* pservers */

static char g_dir[64];

static int setup(void **state) {
  (void)state;
  temp_dir(g_dir);
  char err[256], p[128];
  struct gen *g = gen_new(1, 0.001, err, sizeof(err));
  if (!g)
    return -1;
  snprintf(p, sizeof(p), "%s/train.tsv", g_dir);
  struct gen_out out = {fopen(p, "w"), "train", 1, NULL};
  if (!out.f)
    return -1;
  int rc = gen_write(g, 0, ROWS, &out, 1, NULL, NULL, err, sizeof(err));
  rc |= fclose(out.f);
  snprintf(p, sizeof(p), "%s/test.tsv", g_dir);
  struct gen_out held = {fopen(p, "w"), "test", 1, NULL};
  if (!held.f)
    return -1;
  rc |= gen_write(g, ROWS, ROWS + 600, &held, 1, NULL, NULL, err, sizeof(err));
  rc |= fclose(held.f);
  gen_free(g);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  rm_tree(g_dir);
  return 0;
}

/* A small DNN with AMTL, no validation or test data (so a pass makes no
 * pulls but its steps'); sets: extra "key=value" overrides. */
static struct config *make_config(const char *const *sets) {
  char text[1024];
  snprintf(text, sizeof(text),
           "data:\n"
           "  train: [%s/train.tsv]\n"
           "model:\n"
           "  name: dnn\n"
           "  hidden_units: [32, 32]\n"
           "embedding:\n"
           "  dim: 8\n"
           "  amtl: true\n"
           "  amtl_warmup_steps: 5\n"
           "train:\n"
           "  batch_size: 128\n"
           "  epochs: 2\n"
           "  seed: 7\n"
           "  threads: 1\n"
           "  mode: async\n"
           "  run_dir: %s/run\n"
           "log:\n"
           "  level: warn\n"
           "  interval_s: 1000\n"
           "  progress: off\n",
           g_dir, g_dir);
  char err[1024];
  struct config *cfg = testlib_config(text, sets, err, sizeof(err));
  if (!cfg)
    fail_msg("%s", err);
  return cfg;
}

struct run {
  double loss[MAX_STEPS];
  uint64_t nsteps;
  float *dense; /* the worker's final dense parameters */
  size_t ndense;
  struct train_result res;
};

static void on_step(void *ctx, uint64_t step, double loss) {
  struct run *r = ctx;
  assert_int_equal(step, r->nsteps + 1);
  assert_true(step <= MAX_STEPS);
  r->loss[r->nsteps++] = loss;
}

static struct trainer *new_trainer(const struct config *cfg, struct run *r) {
  char err[1024];
  struct train_opts o = {.cfg = cfg, .on_step = on_step, .ctx = r};
  struct trainer *tr = train_new(&o, err, sizeof(err));
  if (!tr)
    fail_msg("train_new: %s", err);
  return tr;
}

static size_t tables_of(const struct config *cfg, struct trainer *tr,
                        struct store_table *t) {
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  size_t nt = (size_t)train_tables(tr, ids, dims);
  ps_local_tables_from_config(cfg, (uint32_t)nt, t);
  for (size_t i = 0; i < nt; i++) {
    t[i].id = ids[i];
    t[i].dim = (unsigned)dims[i];
    t[i].amtl = i == 0 ? t[i].amtl : 0;
  }
  return nt;
}

/* Trains tr against ps; keeps the result and dense parameters in r. */
static void train_on(struct trainer *tr, struct ps *ps, struct run *r) {
  char err[1024];
  if (train_run(tr, ps, &r->res, err, sizeof(err)))
    fail_msg("train_run: %s", err);
  assert_int_equal(r->res.steps, r->nsteps);
  struct params *p = train_params(tr);
  r->ndense = p->len;
  r->dense = malloc(p->len * sizeof(float));
  memcpy(r->dense, p->values, p->len * sizeof(float));
}

/* Embedded mode over one store, with the config and sets. */
static void embedded_run(const char *const *sets, struct run *r) {
  struct config *cfg = make_config(sets);
  struct trainer *tr = new_trainer(cfg, r);
  struct store_table t[TRAIN_MAX_TABLES];
  size_t nt = tables_of(cfg, tr, t);
  char dir[64], err[1024];
  struct store_options so = ts_options(t, nt, 0, 1, 0, STORE_WAL_OFF);
  struct store *st = store_open(temp_dir(dir), &so, err, sizeof(err));
  if (!st)
    fail_msg("store_open: %s", err);
  struct ps *ps = ps_local_new(&st, 1, t, nt, 0, err, sizeof(err));
  assert_non_null(ps);
  train_on(tr, ps, r);
  ps_free(ps);
  assert_int_equal(store_close(st, err, sizeof(err)), 0);
  rm_tree(dir);
  train_free(tr);
  config_free(cfg);
}

static void run_free(struct run *r) {
  free(r->dense);
  memset(r, 0, sizeof(*r));
}

static unsigned count_of(const char *json, const char *op) {
  char pat[32];
  snprintf(pat, sizeof(pat), "\"%s\":", op);
  const char *p = strstr(json, pat);
  assert_non_null(p);
  return (unsigned)atoi(p + strlen(pat));
}

/* What the overlap reads, step by step, embedded. */
static void test_overlap_reads_one_step_stale(void **state) {
  (void)state;
  /* 30 steps: the first epoch (24) and a few of the second */
  static const char *const off[] = {"train.prefetch=false",
                                    "train.max_steps=30", NULL};
  static const char *const on[] = {"train.prefetch=true", "train.max_steps=30",
                                   NULL};
  static const char *const ssp[] = {"train.mode=ssp", "train.staleness=2",
                                    "train.max_steps=30", NULL};
  static const char *const sync[] = {"train.mode=sync", "train.max_steps=30",
                                     NULL};
  struct run *a = calloc(4, sizeof(struct run));
  embedded_run(off, &a[0]);
  embedded_run(on, &a[1]);
  embedded_run(ssp, &a[2]);
  embedded_run(sync, &a[3]); /* prefetch is on by default: sync ignores it */
  for (int i = 0; i < 4; i++) {
    assert_int_equal(a[i].nsteps, 30);
    /* each learned: the second epoch's loss below the first's */
    assert_true(a[i].res.last_loss < a[i].res.first_loss - 0.01);
  }
  print_message("step 1..3 losses: off %.9f %.9f %.9f, async %.9f %.9f "
                "%.9f, ssp(2) %.9f %.9f %.9f\n",
                a[0].loss[0], a[0].loss[1], a[0].loss[2], a[1].loss[0],
                a[1].loss[1], a[1].loss[2], a[2].loss[0], a[2].loss[1],
                a[2].loss[2]);
  /* step 1 reads fresh rows in every mode */
  assert_true(a[1].loss[0] == a[0].loss[0]);
  /* step 2: its pull was started before step 1's push */
  assert_true(a[1].loss[1] != a[0].loss[1]);
  /* ssp(2): the same for step 2 (step 1 is no barrier step) ... */
  assert_true(a[2].loss[0] == a[1].loss[0]);
  assert_true(a[2].loss[1] == a[1].loss[1]);
  /* ... but step 3 pulls after the barrier of step 2, not before */
  assert_true(a[2].loss[2] != a[1].loss[2]);
  /* sync and async without the overlap are the same thing for one worker
   * in process, and sync does not overlap */
  for (uint64_t i = 0; i < a[0].nsteps; i++)
    assert_true(a[3].loss[i] == a[0].loss[i]);
  assert_memory_equal(a[3].dense, a[0].dense, a[0].ndense * sizeof(float));
  for (int i = 0; i < 4; i++)
    run_free(&a[i]);
  free(a);
}

/* One worker, async with the overlap, against two pservers == embedded,
 * and the request counts. max_steps 34 ends the second epoch early. */
static void test_async_overlap_net_equals_embedded(void **state) {
  (void)state;
  static const char *const sets[] = {"train.max_steps=34", NULL};
  struct run *emb = calloc(1, sizeof(*emb)), *net = calloc(1, sizeof(*net));
  embedded_run(sets, emb);

  struct config *cfg = make_config(sets);
  struct trainer *tr = new_trainer(cfg, net);
  struct store_table t[TRAIN_MAX_TABLES];
  size_t nt = tables_of(cfg, tr, t);
  char dirs[NS][64], err[1024];
  struct test_server ts[NS];
  const char *eps[NS];
  for (uint32_t s = 0; s < NS; s++) {
    ts[s] = (struct test_server){.dir = temp_dir(dirs[s]),
                                 .tables = t,
                                 .ntables = nt,
                                 .rank = s,
                                 .S = NS,
                                 .W = 1,
                                 .wal = STORE_WAL_OFF};
    assert_int_equal(ts_start(&ts[s]), 0);
    eps[s] = ts[s].endpoint;
  }
  struct ps_net_opts po = {
      .endpoints = eps, .nshards = NS, .timeout_ms = 20000};
  struct ps *ps = ps_net_new(&po, err, sizeof(err));
  assert_non_null(ps);
  train_on(tr, ps, net);
  assert_int_equal(net->res.steps, 34);
  /* the counts, before the evaluation's pulls */
  for (uint32_t s = 0; s < NS; s++) {
    char *json = ps_net_stats(ps, s, err, sizeof(err));
    if (!json)
      fail_msg("stats: %s", err);
    print_message("pserver %u: %u PULL, %u PUSH\n", s, count_of(json, "PULL"),
                  count_of(json, "PUSH"));
    assert_int_equal(count_of(json, "PULL"), 34);
    assert_int_equal(count_of(json, "PUSH"), 34);
    assert_int_equal(count_of(json, "PULL_DENSE"), 0);
    free(json);
  }
  char path[128];
  snprintf(path, sizeof(path), "%s/test.tsv", g_dir);
  const char *files[] = {path};
  struct metrics_result m;
  if (train_eval_files(tr, ps, files, 1, NULL, &m, err, sizeof(err)))
    fail_msg("eval: %s", err);
  double auc = m.auc;
  print_message("async overlap, 2 pservers: %llu steps, loss %.4f -> %.4f, "
                "test AUC %.4f\n",
                (unsigned long long)net->nsteps, net->loss[0],
                net->loss[net->nsteps - 1], auc);
  assert_true(auc > 0.55);
  assert_true(net->res.last_loss < net->res.first_loss - 0.01);

  assert_int_equal(emb->nsteps, net->nsteps);
  for (uint64_t i = 0; i < emb->nsteps; i++)
    if (emb->loss[i] != net->loss[i])
      fail_msg("step %llu: loss %.9g embedded, %.9g distributed",
               (unsigned long long)i + 1, emb->loss[i], net->loss[i]);
  assert_int_equal(emb->ndense, net->ndense);
  assert_memory_equal(emb->dense, net->dense, emb->ndense * sizeof(float));

  assert_int_equal(ps_net_shutdown(ps, err, sizeof(err)), 0);
  for (uint32_t s = 0; s < NS; s++) {
    assert_int_equal(ts_join(&ts[s]), 0);
    rm_tree(dirs[s]);
  }
  ps_free(ps);
  train_free(tr);
  config_free(cfg);
  run_free(emb);
  run_free(net);
  free(emb);
  free(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_overlap_reads_one_step_stale),
      cmocka_unit_test(test_async_overlap_net_equals_embedded),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
