/* reader: globs, worker shares, bad-line reports with file:line, the
 * bad-line fraction abort, rewind. */
#include "worker/reader.h"

#include "common/keys.h"
#include "common/logger.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[] = "/tmp/maskps-reader-XXXXXX";

static void write_file(const char *name, int from, int n, int bad_every) {
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (int i = from; i < from + n; i++)
    if (bad_every && i % bad_every == bad_every - 1)
      fprintf(f, "1 %d:1 oops:0.5\n", i);
    else
      fprintf(f, "%d %d:1 %d:1\n", i % 2, i, i % 7);
  fclose(f);
}

static int setup(void **state) {
  (void)state;
  assert_non_null(mkdtemp(dir));
  write_file("a.libfm", 0, 10, 0);
  write_file("b.libfm", 10, 10, 0);
  write_file("c.txt", 100, 300, 10); /* 10% bad */
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd);
}

/* Reads a whole share and returns the first field's tokens as ints. */
static int read_share(const char *glob, uint32_t rank, uint32_t nranks,
                      int *first, int cap) {
  char pat[256], err[256];
  snprintf(pat, sizeof(pat), "%s/%s", dir, glob);
  const char *paths[] = {pat};
  struct reader_options o = {.format = READER_LIBFM,
                             .paths = paths,
                             .npaths = 1,
                             .rank = rank,
                             .nranks = nranks,
                             .bad_line_fraction = 0.01,
                             .report_first = 3};
  struct reader *r = reader_open(&o, err, sizeof(err));
  assert_non_null(r);
  assert_int_equal(reader_nfields(r), 2);
  uint64_t keys[2];
  struct data_example ex = {.keys = keys};
  int n = 0, rc;
  while ((rc = reader_next(r, &ex)) == 1) {
    assert_true(n < cap);
    for (int v = 0; v < 1000; v++) {
      char tok[16];
      int len = snprintf(tok, sizeof(tok), "%d", v);
      if (keys[0] == keys_feature_id(0, tok, (size_t)len)) {
        first[n] = v;
        break;
      }
    }
    n++;
  }
  assert_int_equal(rc, 0);
  reader_free(r);
  return n;
}

static void test_glob_and_shares(void **state) {
  (void)state;
  int all[32], s0[32], s1[32];
  assert_int_equal(read_share("*.libfm", 0, 1, all, 32), 20);
  for (int i = 0; i < 20; i++)
    assert_int_equal(all[i], i); /* a.libfm then b.libfm, in order */
  assert_int_equal(read_share("*.libfm", 0, 2, s0, 32), 10);
  assert_int_equal(read_share("*.libfm", 1, 2, s1, 32), 10);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(s0[i], 2 * i);
    assert_int_equal(s1[i], 2 * i + 1);
  }
}

static void test_bad_lines_reported_then_abort(void **state) {
  (void)state;
  char pat[256], err[256];
  snprintf(pat, sizeof(pat), "%s/c.txt", dir);
  const char *paths[] = {pat};
  struct logger *lg =
      logger_new("worker", 0, NULL, LOGGER_INFO, err, sizeof(err));
  FILE *cap = tmpfile();
  logger_set_stream(lg, cap);
  struct reader_options o = {.format = READER_LIBFM,
                             .paths = paths,
                             .npaths = 1,
                             .rank = 0,
                             .nranks = 1,
                             .bad_line_fraction = 0.05,
                             .report_first = 2,
                             .log = lg};
  struct reader *r = reader_open(&o, err, sizeof(err));
  assert_non_null(r);
  uint64_t keys[2];
  struct data_example ex = {.keys = keys};
  int good = 0, rc;
  while ((rc = reader_next(r, &ex)) == 1)
    good++;
  assert_int_equal(rc, -1);
  assert_int_equal(good, 90); /* aborts at the 100-line check */
  assert_int_equal(reader_bad_lines(r), 10);
  char want[400];
  snprintf(want, sizeof(want),
           "10 of 100 lines were malformed (more than data.bad_line_fraction "
           "= 0.05); is data.format right for %s?",
           pat);
  assert_string_equal(reader_error(r), want);
  rewind(cap);
  char line[512];
  assert_non_null(fgets(line, sizeof(line), cap));
  snprintf(want, sizeof(want), "%s:10: feature 2: value '0.5' is not 1", pat);
  assert_non_null(strstr(line, want));
  assert_non_null(fgets(line, sizeof(line), cap));
  snprintf(want, sizeof(want), "%s:20: ", pat);
  assert_non_null(strstr(line, want));
  assert_null(fgets(line, sizeof(line), cap)); /* only report_first lines */
  fclose(cap);

  /* A looser limit reads everything; rewind gives the same stream again. */
  reader_free(r);
  o.bad_line_fraction = 0.2;
  o.log = NULL;
  o.report_first = 0;
  r = reader_open(&o, err, sizeof(err));
  for (int pass = 0; pass < 2; pass++) {
    good = 0;
    while ((rc = reader_next(r, &ex)) == 1)
      good++;
    assert_int_equal(rc, 0);
    assert_int_equal(good, 270);
    reader_rewind(r);
  }
  reader_free(r);
  logger_free(lg);
}

/* Bytes for the time left in epoch 1: the files' sizes, and the bytes of
 * every line read so far, of all shares (rank 1's first example is line 1,
 * so lines 0 and 1 are behind it); rewind restarts the count. */
static void test_bytes(void **state) {
  (void)state;
  uint64_t len[20], total = 0;
  for (int i = 0; i < 20; i++) {
    char line[64];
    len[i] = (uint64_t)snprintf(line, sizeof(line), "%d %d:1 %d:1\n", i % 2, i,
                                i % 7);
    total += len[i];
  }
  char pat[256], err[256];
  snprintf(pat, sizeof(pat), "%s/*.libfm", dir);
  const char *paths[] = {pat};
  struct reader_options o = {.format = READER_LIBFM,
                             .paths = paths,
                             .npaths = 1,
                             .rank = 1,
                             .nranks = 2};
  struct reader *r = reader_open(&o, err, sizeof(err));
  assert_non_null(r);
  assert_int_equal(reader_bytes_total(r), total);
  assert_int_equal(reader_bytes_done(r), 0);
  uint64_t keys[2];
  struct data_example ex = {.keys = keys};
  assert_int_equal(reader_next(r, &ex), 1);
  assert_int_equal(reader_bytes_done(r), len[0] + len[1]);
  while (reader_next(r, &ex) == 1)
    ;
  assert_int_equal(reader_bytes_done(r), total);
  reader_rewind(r);
  assert_int_equal(reader_bytes_done(r), 0);
  assert_int_equal(reader_bytes_total(r), total);
  reader_free(r);
}

static void test_missing_files(void **state) {
  (void)state;
  char err[256], pat[256];
  snprintf(pat, sizeof(pat), "%s/nothing*.tsv", dir);
  const char *paths[] = {pat};
  struct reader_options o = {
      .format = READER_CRITEO, .paths = paths, .npaths = 1, .nranks = 1};
  assert_null(reader_open(&o, err, sizeof(err)));
  char want[300];
  snprintf(want, sizeof(want), "%s: matches no file", pat);
  assert_string_equal(err, want);
  const char *plain[] = {"/nonexistent/train.tsv"};
  o.paths = plain;
  assert_null(reader_open(&o, err, sizeof(err)));
  assert_string_equal(err, "/nonexistent/train.tsv: No such file or directory");
  o.paths = (const char *const[]){dir};
  assert_null(reader_open(&o, err, sizeof(err)));
  snprintf(want, sizeof(want), "%s: not a regular file", dir);
  assert_string_equal(err, want);
  o.npaths = 0;
  assert_null(reader_open(&o, err, sizeof(err)));
  assert_string_equal(err, "no data files given");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_glob_and_shares),
      cmocka_unit_test(test_bad_lines_reported_then_abort),
      cmocka_unit_test(test_bytes),
      cmocka_unit_test(test_missing_files),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
