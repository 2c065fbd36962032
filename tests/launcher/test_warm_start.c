/* Warm start through `maskps train` (the embedded wiring of
 * launcher/main_maskps.c): a run warm-started from a finished run's best
 * state (its store checkpoint best/shard-0 for warm_start.tables, its
 * best/dense.bin for warm_start.dense) starts with a lower training loss
 * than a cold start of the same config on the same data, logs what it
 * loaded, and bad warm_start paths stop the run at startup with a message
 * naming the key and the path, before anything is created. */
#include "common/gen.h"
#include "launcher_testlib.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define ROWS 12000
#define STEPS 15

static char g_dir[64];

static int setup(void **state) {
  (void)state;
  strcpy(g_dir, "/tmp/maskps-warm-XXXXXX");
  if (!mkdtemp(g_dir))
    return -1;
  char err[256];
  struct gen *g = gen_new(3, 0.001, err, sizeof(err));
  if (!g)
    return -1;
  int rc = testlib_write_split(g_dir, g, ROWS, NULL);
  gen_free(g);
  char p[128];
  snprintf(p, sizeof(p), "%s/c.yaml", g_dir);
  FILE *f = fopen(p, "w");
  if (!f)
    return -1;
  fprintf(f,
          "data:\n"
          "  train: [%s/train.tsv]\n"
          "  valid: [%s/valid.tsv]\n"
          "  test: [%s/test.tsv]\n"
          "model: {name: dnn, hidden_units: [16]}\n"
          "embedding: {dim: 4}\n"
          "train: {batch_size: 256, epochs: 2, seed: 5}\n"
          "optimizer: {lr: 0.003, sparse_lr: 0.01}\n"
          "log: {interval_s: 0.000001, progress: off}\n"
          "pserver: {wal: off}\n",
          g_dir, g_dir, g_dir);
  rc |= fclose(f);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  testlib_rm_tree(g_dir);
  return 0;
}

/* `maskps train g_dir/c.yaml --set train.run_dir=g_dir/<run> <more>`, out
 * and err in g_dir/<run>.out, .err; the exit status. */
static int train(const char *run, const char *more) {
  char cmd[4096];
  snprintf(cmd, sizeof(cmd),
           "'%s' train '%s/c.yaml' --set train.run_dir=%s/%s %s >'%s/%s.out' "
           "2>'%s/%s.err'",
           MASKPS_BIN, g_dir, g_dir, run, more, g_dir, run, g_dir, run);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *fmt, const char *a) {
  char p[256];
  snprintf(p, sizeof(p), fmt, g_dir, a);
  FILE *f = fopen(p, "r");
  if (!f)
    return NULL;
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

/* Mean of the per-step training losses of run's JSONL log (one "train"
 * record a step with this interval_s); *n gets the record count. */
static double mean_train_loss(const char *run, int *n) {
  char *log = slurp("%s/%s/logs/worker-0.jsonl", run);
  assert_non_null(log);
  double sum = 0;
  *n = 0;
  for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
    if (!strstr(l, "\"event\":\"train\""))
      continue;
    char *x = strstr(l, "\"loss\":");
    assert_non_null(x);
    sum += strtod(x + 7, NULL);
    (*n)++;
  }
  return *n ? sum / *n : 0;
}

static void test_warm_start_begins_lower(void **state) {
  (void)state;
  /* the old run: two full epochs, its best state under old/best */
  if (train("old", "") != 0)
    fail_msg("old run: %s", slurp("%s/%s.err", "old"));
  char more[1024];
  snprintf(more, sizeof(more),
           "--set train.max_steps=%d --set 'warm_start.tables=[%s/old/best/"
           "shard-0]' --set warm_start.dense=%s/old/best/dense.bin",
           STEPS, g_dir, g_dir);
  if (train("warm", more) != 0)
    fail_msg("warm run: %s", slurp("%s/%s.err", "warm"));
  snprintf(more, sizeof(more), "--set train.max_steps=%d", STEPS);
  if (train("cold", more) != 0)
    fail_msg("cold run: %s", slurp("%s/%s.err", "cold"));
  int nw, nc;
  double warm = mean_train_loss("warm", &nw),
         cold = mean_train_loss("cold", &nc);
  assert_int_equal(nw, STEPS);
  assert_int_equal(nc, STEPS);
  print_message("mean loss over the first %d steps: warm %.4f, cold %.4f\n",
                STEPS, warm, cold);
  assert_true(warm < cold - 0.02);
  /* the dense report: every tensor of the same model loaded */
  const char *log = slurp("%s/%s/logs/worker-0.jsonl", "warm");
  assert_non_null(strstr(log, "\"event\":\"warm_start\""));
  assert_non_null(strstr(log, "\"report\":\"loaded "));
  assert_non_null(strstr(slurp("%s/%s.err", "warm"), "warm start, dense"));

  /* a wider model: shape mismatches are reported and left at init */
  snprintf(more, sizeof(more),
           "--set train.max_steps=2 --set 'model.hidden_units=[24]' --set "
           "warm_start.dense=%s/old/best/dense.bin",
           g_dir);
  if (train("wider", more) != 0)
    fail_msg("wider run: %s", slurp("%s/%s.err", "wider"));
  assert_non_null(strstr(slurp("%s/%s.err", "wider"), "shape differs"));
}

static void test_bad_paths_stop_at_startup(void **state) {
  (void)state;
  char more[1024];
  snprintf(more, sizeof(more),
           "--set 'warm_start.tables=[%s/no-such-run/best/shard-0]'", g_dir);
  assert_int_not_equal(train("bad1", more), 0);
  const char *e = slurp("%s/%s.err", "bad1");
  assert_non_null(strstr(e, "warm_start.tables"));
  assert_non_null(strstr(e, "no-such-run"));
  struct stat st;
  char p[256];
  snprintf(p, sizeof(p), "%s/bad1/db", g_dir);
  assert_int_not_equal(stat(p, &st), 0); /* no store was created */

  snprintf(more, sizeof(more), "--set warm_start.dense=%s/nothing.bin", g_dir);
  assert_int_not_equal(train("bad2", more), 0);
  e = slurp("%s/%s.err", "bad2");
  assert_non_null(strstr(e, "warm_start.dense"));
  assert_non_null(strstr(e, "nothing.bin"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_warm_start_begins_lower),
      cmocka_unit_test(test_bad_paths_stop_at_startup),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
