/* CSV end to end (worker/train.h over pserver/ps_local.h, as `maskps
 * train` wires them): generated rows (common/gen.h) written as CSV files
 * with a header, a quoted column, a group id, bucketised numbers, a value
 * column and an ignored column; a DNN trained on them learns and reports
 * gAUC, the best state predicts the test file to the same metrics, and an
 * LR that sees ONLY the value column learns from it (which it can only do
 * if the values reach the model: the column has one row for every line). */
#include "common/config.h"
#include "common/gen.h"
#include "common/keys.h"
#include "common/ps.h"
#include "launcher_testlib.h"
#include "pserver/ps_local.h"
#include "pserver/store.h"
#include "worker/nn/params.h"
#include "worker/reader.h"
#include "worker/train.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define ROWS 16000
#define NUM 6  /* I1..I6 as numeric columns */
#define CAT 12 /* C1..C12 as categorical columns */
#define GROUPS 60

static char g_dir[64];
static uint64_t g_rows[3]; /* train (both files), valid, test */

static void write_header(FILE *f) {
  fputs("id,click,user", f);
  for (int j = 0; j < NUM; j++)
    fprintf(f, ",I%d", j + 1);
  for (int c = 0; c < CAT; c++)
    fprintf(f, ",C%d", c + 1);
  fputs(",score\n", f);
}

/* One row as CSV: C3 quoted with a comma inside, an empty cell where the
 * generator left the field empty, score = the hidden logit / 4. */
static void write_row(FILE *f, const struct gen *g, uint64_t i) {
  struct gen_row r;
  gen_row(g, i, &r);
  fprintf(f, "%llu,%u,u%llu", (unsigned long long)i, r.label,
          (unsigned long long)(keys_mix64(i) % GROUPS));
  for (int j = 0; j < NUM; j++)
    if (r.num_missing[j])
      fputs(",", f);
    else
      fprintf(f, ",%lld", (long long)r.num[j]);
  for (int c = 0; c < CAT; c++)
    if (r.cat_missing[c])
      fputs(",", f);
    else if (c == 2)
      fprintf(f, ",\"%08x,q\"", r.cat[c]);
    else
      fprintf(f, ",%08x", r.cat[c]);
  fprintf(f, ",%.4f\n", gen_logit(g, &r) / 4);
}

static int setup(void **state) {
  (void)state;
  strcpy(g_dir, "/tmp/maskps-csvtrain-XXXXXX");
  if (!mkdtemp(g_dir))
    return -1;
  char err[256];
  struct gen *g = gen_new(3, 0.001, err, sizeof(err));
  if (!g)
    return -1;
  const char *names[] = {"train-0.csv", "train-1.csv", "valid.csv", "test.csv"};
  FILE *f[4];
  int rc = 0;
  for (int i = 0; i < 4; i++) {
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", g_dir, names[i]);
    f[i] = fopen(p, "w");
    if (!f[i])
      return -1;
    write_header(f[i]);
  }
  const double frac[] = {0.8, 0.1, 0.1};
  for (uint64_t i = 0; i < ROWS; i++) {
    unsigned part = gen_split_index(g, i, frac, 3);
    g_rows[part]++;
    /* training rows: the first half in one file, the rest in the other */
    write_row(part ? f[part + 1] : f[i < ROWS / 2 ? 0 : 1], g, i);
  }
  for (int i = 0; i < 4; i++)
    rc |= fclose(f[i]);
  gen_free(g);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  testlib_rm_tree(g_dir);
  return 0;
}

static struct config *make_config(const char *const *sets) {
  char text[2048];
  snprintf(text, sizeof(text),
           "data:\n"
           "  format: csv\n"
           "  train: [%s/train-*.csv]\n"
           "  valid: [%s/valid.csv]\n"
           "  test: [%s/test.csv]\n"
           "  csv_label: click\n"
           "  csv_group: user\n"
           "  csv_numeric: [I1, I2, I3, I4, I5, I6]\n"
           "  csv_value: [score]\n"
           "  csv_ignore: [id]\n"
           "  bad_line_fraction: 0\n"
           "model:\n"
           "  name: dnn\n"
           "  hidden_units: [32, 32]\n"
           "embedding:\n"
           "  dim: 8\n"
           "train:\n"
           "  batch_size: 256\n"
           "  epochs: 2\n"
           "  seed: 7\n"
           "log:\n"
           "  interval_s: 1000\n"
           "pserver:\n"
           "  wal: off\n",
           g_dir, g_dir, g_dir);
  char err[1024];
  struct config *cfg = testlib_config(text, sets, err, sizeof(err));
  if (!cfg)
    fail_msg("%s", err);
  return cfg;
}

struct rig {
  struct trainer *tr;
  struct store *st;
  struct ps *ps;
};

/* The embedded wiring: a store in a fresh directory, or (at) a best
 * state's checkpoint with no data opened (fields). */
static void rig_open(struct rig *g, const struct config *cfg,
                     const char *best_dir, const char *at, int fields) {
  static int n;
  char err[1024], dir[4096];
  struct train_opts o = {.cfg = cfg, .best_dir = best_dir, .fields = fields};
  g->tr = train_new(&o, err, sizeof(err));
  if (!g->tr) {
    print_error("train_new: %s\n", err);
    fail();
  }
  uint32_t ids[TRAIN_MAX_TABLES];
  int dims[TRAIN_MAX_TABLES];
  int nt = train_tables(g->tr, ids, dims);
  struct store_table t[TRAIN_MAX_TABLES];
  ps_local_tables_from_config(cfg, (uint32_t)nt, t);
  for (int i = 0; i < nt; i++) {
    t[i].id = ids[i];
    t[i].dim = (unsigned)dims[i];
  }
  struct store_options so;
  ps_local_store_options(cfg, 0, 1, 0, &so);
  so.tables = t;
  so.ntables = (size_t)nt;
  so.memory_mb = 16;
  if (at) {
    snprintf(dir, sizeof(dir), "%s", at);
    so.create_if_missing = 0;
  } else {
    snprintf(dir, sizeof(dir), "%s/db-%d", g_dir, n++);
  }
  g->st = store_open(dir, &so, err, sizeof(err));
  if (!g->st)
    print_error("store_open: %s\n", err);
  assert_non_null(g->st);
  g->ps = ps_local_new(&g->st, 1, t, (size_t)nt, 0, err, sizeof(err));
  assert_non_null(g->ps);
}

static void rig_close(struct rig *g) {
  char err[512];
  ps_free(g->ps);
  assert_int_equal(store_close(g->st, err, sizeof(err)), 0);
  train_free(g->tr);
}

static void run(const struct config *cfg, const char *best_dir,
                struct train_result *res) {
  struct rig g;
  rig_open(&g, cfg, best_dir, NULL, 0);
  char err[1024];
  if (train_run(g.tr, g.ps, res, err, sizeof(err))) {
    print_error("train_run: %s\n", err);
    fail();
  }
  rig_close(&g);
}

/* Every column kind at once: the DNN learns (the generator's Bayes AUC is
 * ~0.79; the score column alone carries most of it), every line is read
 * (no bad line: the quoted column parses), gAUC over the user groups is
 * reported, and the best state predicts test.csv (header and all) to the
 * reported test metrics. */
static void test_dnn_on_csv(void **state) {
  (void)state;
  struct config *cfg = make_config(NULL);
  struct train_result r;
  char best[128];
  snprintf(best, sizeof(best), "%s/best", g_dir);
  run(cfg, best, &r);
  assert_int_equal(r.examples, 2 * g_rows[0]);
  assert_int_equal(r.valid.n, g_rows[1]);
  assert_int_equal(r.test.n, g_rows[2]);
  assert_true(r.last_loss < r.first_loss);
  print_message("csv dnn: test AUC %.4f gAUC %.4f (%llu groups) logloss "
                "%.4f\n",
                r.test.auc, r.test.gauc, (unsigned long long)r.test.gauc_groups,
                r.test.logloss);
  assert_true(r.test.auc > 0.72);
  assert_true(isfinite(r.test.gauc) && r.test.gauc > 0.68);
  assert_int_equal(r.test.gauc_groups, GROUPS);
  assert_true(r.test.gauc != r.test.auc); /* groups are not all one */

  struct rig g;
  char at[160], dense[160], err[1024], report[512], path[256];
  /* the header is kept with the best state, for maskps predict */
  char **cols;
  size_t ncols;
  snprintf(path, sizeof(path), "%s/columns.txt", best);
  assert_int_equal(reader_load_columns(path, &cols, &ncols, err, sizeof(err)),
                   1);
  assert_int_equal(ncols, 3 + NUM + CAT + 1);
  assert_string_equal(cols[1], "click");
  assert_string_equal(cols[ncols - 1], "score");
  for (size_t i = 0; i < ncols; i++)
    free(cols[i]);
  free(cols);
  snprintf(at, sizeof(at), "%s/shard-0", best);
  snprintf(dense, sizeof(dense), "%s/dense.bin", best);
  rig_open(&g, cfg, NULL, at, NUM + CAT + 1);
  struct params *p = train_params(g.tr);
  assert_int_equal(
      params_load(p, dense, false, report, sizeof(report), err, sizeof(err)),
      p->count);
  snprintf(path, sizeof(path), "%s/test.csv", g_dir);
  const char *paths[] = {path};
  struct metrics_result mr;
  FILE *probs = tmpfile();
  assert_int_equal(
      train_eval_files(g.tr, g.ps, paths, 1, probs, &mr, err, sizeof(err)), 0);
  assert_true(mr.auc == r.test.auc);
  assert_true(mr.gauc == r.test.gauc);
  assert_true(mr.logloss == r.test.logloss);
  /* one probability per data line: the header gets none */
  rewind(probs);
  char line[64];
  uint64_t lines = 0;
  while (fgets(line, sizeof(line), probs))
    lines++;
  assert_int_equal(lines, g_rows[2]);
  fclose(probs);
  rig_close(&g);
  config_free(cfg);
}

/* LR on the value column alone: every line has the same key for it, so
 * without the value the model could only learn the CTR (AUC 0.5); with
 * logit = bias + x * w it ranks by the score, close to the generator's
 * Bayes AUC. */
static void test_value_column_alone(void **state) {
  (void)state;
  struct config *cfg = make_config((const char *const[]){
      "model.name=lr", "train.epochs=1", "optimizer.sparse_lr=0.05",
      "data.csv_numeric=[]",
      "data.csv_ignore=[id, I1, I2, I3, I4, I5, I6, C1, C2, C3, C4, C5, C6, "
      "C7, C8, C9, C10, C11, C12]",
      NULL});
  struct train_result r;
  run(cfg, NULL, &r);
  print_message("csv lr on the value column: test AUC %.4f gAUC %.4f\n",
                r.test.auc, r.test.gauc);
  assert_true(r.test.auc > 0.75);
  assert_true(r.test.gauc > 0.7);
  config_free(cfg);
}

/* A header that names a column the config does not have stops the run
 * before training, with file:line and what the header holds. */
static void test_config_header_mismatch(void **state) {
  (void)state;
  struct config *cfg =
      make_config((const char *const[]){"data.csv_value=[scores]", NULL});
  char err[1024], want[1024];
  struct train_opts o = {.cfg = cfg};
  assert_null(train_new(&o, err, sizeof(err)));
  snprintf(want, sizeof(want),
           "data.train: %s/train-0.csv:1: data.csv_value: no column 'scores' "
           "(columns: 'id', 'click', 'user', 'I1',",
           g_dir);
  if (strncmp(err, want, strlen(want)))
    fail_msg("got '%s', expected it to start with '%s'", err, want);
  config_free(cfg);
}

/* valid and test must have the training files' header, in its order:
 * columns swapped (same count, same names) would otherwise feed each
 * field the other's values. */
static void test_valid_header_differs(void **state) {
  (void)state;
  char p[128];
  snprintf(p, sizeof(p), "%s/swapped.csv", g_dir);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("id,click,user,I2,I1,I3,I4,I5,I6", f);
  for (int c = 0; c < CAT; c++)
    fprintf(f, ",C%d", c + 1);
  fputs(",score\n", f);
  fclose(f);
  char set[200];
  snprintf(set, sizeof(set), "data.valid=[%s]", p);
  struct config *cfg = make_config((const char *const[]){set, NULL});
  char err[1024], want[1024];
  struct train_opts o = {.cfg = cfg};
  assert_null(train_new(&o, err, sizeof(err)));
  snprintf(want, sizeof(want),
           "data.valid: %s:1: header differs from the training data's: "
           "column 4 is 'I2', expected 'I1'",
           p);
  assert_string_equal(err, want);
  config_free(cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_header_mismatch),
      cmocka_unit_test(test_valid_header_differs),
      cmocka_unit_test(test_value_column_alone),
      cmocka_unit_test(test_dnn_on_csv),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
