/* CSV: the schema from config-like roles (and its errors), RFC 4180
 * splitting, the keys and values of a good line, every kind of malformed
 * line with its exact reason, libFM values; the reader: header rows (not
 * data, not shared), one header per glob, file:line reports, columns named
 * by the config for files without a header. */
#include "worker/data.h"
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

static char dir[] = "/tmp/maskps-csv-XXXXXX";

static const char *const header[] = {"click", "user", "ad",    "hour",
                                     "price", "ctr",  "req_id"};
static const char *const numeric[] = {"hour"};
static const char *const value[] = {"price", "ctr"};
static const char *const ignore[] = {"req_id"};

static struct data_csv_spec spec(void) {
  return (struct data_csv_spec){.delim = ',',
                                .label = "click",
                                .group = "user",
                                .numeric = numeric,
                                .nnumeric = 1,
                                .value = value,
                                .nvalue = 2,
                                .ignore = ignore,
                                .nignore = 1};
}

static struct data_csv_schema *schema(void) {
  struct data_csv_spec sp = spec();
  char why[512];
  struct data_csv_schema *s =
      data_csv_schema_new(&sp, header, 7, why, sizeof(why));
  if (!s)
    fail_msg("%s", why);
  return s;
}

static uint64_t tok(uint32_t f, const char *t) {
  return keys_feature_id(f, t, strlen(t));
}

static void test_schema_roles(void **state) {
  (void)state;
  struct data_csv_schema *s = schema();
  assert_int_equal(s->ncols, 7);
  assert_int_equal(s->nfields, 4); /* ad, hour, price, ctr */
  assert_int_equal(s->nvalues, 2);
  const enum data_csv_role want[] = {
      DATA_CSV_LABEL, DATA_CSV_GROUP, DATA_CSV_CATEGORICAL, DATA_CSV_NUMERIC,
      DATA_CSV_VALUE, DATA_CSV_VALUE, DATA_CSV_IGNORE};
  const uint32_t field[] = {UINT32_MAX, UINT32_MAX, 0, 1, 2, 3, UINT32_MAX};
  for (int c = 0; c < 7; c++) {
    assert_int_equal(s->role[c], want[c]);
    assert_int_equal(s->field[c], field[c]);
  }
  data_csv_schema_free(s);
  data_csv_schema_free(NULL);
}

static void expect_schema_error(const struct data_csv_spec *sp,
                                const char *const *names, size_t n,
                                const char *want) {
  char why[512];
  assert_null(data_csv_schema_new(sp, names, n, why, sizeof(why)));
  if (strcmp(why, want))
    fail_msg("got '%s', expected '%s'", why, want);
}

static void test_schema_errors(void **state) {
  (void)state;
  struct data_csv_spec sp = spec();
  const char *const numeric2[] = {"hour", "pricee", "hr"};
  sp.numeric = numeric2;
  sp.nnumeric = 3;
  expect_schema_error(&sp, header, 7,
                      "data.csv_numeric: no column 'pricee', 'hr' (columns: "
                      "'click', 'user', 'ad', 'hour', 'price', 'ctr', "
                      "'req_id')");
  sp = spec();
  sp.label = "clicked";
  expect_schema_error(&sp, header, 7,
                      "data.csv_label: no column 'clicked' (columns: 'click', "
                      "'user', 'ad', 'hour', 'price', 'ctr', 'req_id')");
  sp.label = "";
  expect_schema_error(&sp, header, 7, "data.csv_label: no label column named");
  sp = spec();
  const char *const value2[] = {"price", "hour"};
  sp.value = value2;
  expect_schema_error(&sp, header, 7,
                      "column 'hour' is in data.csv_numeric and in "
                      "data.csv_value: one role per column");
  sp = spec();
  sp.group = "click";
  expect_schema_error(&sp, header, 7,
                      "column 'click' is in data.csv_label and in "
                      "data.csv_group: one role per column");
  sp = spec();
  const char *const dup[] = {"click", "ad", "user", "ad"};
  expect_schema_error(&sp, dup, 4,
                      "column 'ad' appears twice (columns 2 and 4)");
  const char *const unnamed[] = {"", "click", "ad"}; /* pandas' index */
  expect_schema_error(&sp, unnamed, 3,
                      "column 1 has no name (name it in the header, and list "
                      "it in data.csv_ignore if it is not a feature)");
  const char *const only[] = {"click", "user", "req_id"};
  sp.numeric = sp.value = NULL;
  sp.nnumeric = sp.nvalue = 0;
  expect_schema_error(&sp, only, 3,
                      "no feature column is left (every column is the label, "
                      "the group or ignored) (columns: 'click', 'user', "
                      "'req_id')");
}

/* Splits s (copied: the split rewrites quotes in place). */
static int split(const char *s, const char **col, size_t *clen, size_t *n,
                 char *buf, char *why) {
  strcpy(buf, s);
  return data_csv_split(buf, strlen(buf), ',', col, clen, 8, n, why, 256);
}

static void test_split_rfc4180(void **state) {
  (void)state;
  char buf[256], why[256];
  const char *col[8];
  size_t clen[8], n;
  assert_int_equal(
      split("a,\"b,c\",\"say \"\"hi\"\"\",,\"\"\r\n", col, clen, &n, buf, why),
      0);
  assert_int_equal(n, 5);
  const char *want[] = {"a", "b,c", "say \"hi\"", "", ""};
  for (int i = 0; i < 5; i++) {
    assert_int_equal(clen[i], strlen(want[i]));
    assert_memory_equal(col[i], want[i], clen[i]);
  }
  assert_int_equal(split("x,", col, clen, &n, buf, why), 0);
  assert_int_equal(n, 2);
  assert_int_equal(clen[1], 0);
  assert_int_equal(split("1,2,3,4,5,6,7,8,9,10", col, clen, &n, buf, why), 0);
  assert_int_equal(n, 10); /* counted beyond maxcols */
  const struct {
    const char *line, *why;
  } bad[] = {
      {"a,\"b", "column 2: unterminated quoted field (a line break inside "
                "quotes is not supported)"},
      {"a,\"b\"c,d", "column 2: text after the closing quote"},
      {"a,b\"c", "column 2: a double quote inside an unquoted field (quote the "
                 "whole field, RFC 4180)"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    assert_int_equal(split(bad[i].line, col, clen, &n, buf, why), -1);
    if (strcmp(why, bad[i].why))
      fail_msg("'%s': got '%s', expected '%s'", bad[i].line, why, bad[i].why);
  }
}

static int parse(const struct data_csv_schema *s, const char *line,
                 struct data_example *ex, char *why) {
  char buf[512];
  strcpy(buf, line);
  return data_parse_csv(s, buf, strlen(buf), ex, why, 256);
}

static void test_parse_good_lines(void **state) {
  (void)state;
  struct data_csv_schema *s = schema();
  uint64_t keys[4];
  float vals[4];
  struct data_example ex = {.keys = keys, .vals = vals};
  char why[256] = "";
  assert_int_equal(parse(s, "1,u7,\"a,3\",100,2.5,0.125,zz\n", &ex, why), 0);
  assert_true(ex.label == 1.0f);
  assert_int_equal(ex.group, keys_feature_id(UINT32_MAX, "u7", 2));
  assert_int_equal(ex.nkeys, 4);
  assert_int_equal(keys[0], tok(0, "a,3"));
  assert_int_equal(keys[1], tok(1, "21")); /* floor(ln(100)^2) */
  assert_int_equal(keys[2], tok(2, "#value"));
  assert_int_equal(keys[3], tok(3, "#value"));
  assert_true(ex.valued);
  const float want[] = {1, 1, 2.5f, 0.125f};
  for (int f = 0; f < 4; f++)
    assert_true(vals[f] == want[f]);
  /* empties: the fields' missing ids, value 1; values of 1 are not
   * "valued" (the batch takes its binary path) */
  assert_int_equal(parse(s, "0,u8,,,,1,", &ex, why), 0);
  assert_true(ex.label == 0.0f);
  for (uint32_t f = 0; f < 3; f++)
    assert_int_equal(keys[f], keys_missing_id(f));
  assert_int_equal(keys[3], tok(3, "#value"));
  assert_false(ex.valued);
  /* numeric: integers in any decimal spelling and negatives bucketise by
   * the Criteo rule (1.9 is refused: tests below) */
  assert_int_equal(parse(s, "0,u8,a,1.0e0,-3e1,0,x", &ex, why), 0);
  assert_int_equal(keys[1], tok(1, "1"));
  assert_true(vals[2] == -30.0f && vals[3] == 0.0f);
  assert_int_equal(parse(s, "0,u8,a,-2,1,1,x", &ex, why), 0);
  assert_int_equal(keys[1], tok(1, "-2"));
  data_csv_schema_free(s);
}

static void test_parse_bad_lines(void **state) {
  (void)state;
  struct data_csv_schema *s = schema();
  uint64_t keys[4];
  float vals[4];
  struct data_example ex = {.keys = keys, .vals = vals};
  char why[256];
  const struct {
    const char *line, *why;
  } bad[] = {
      {"1,u,a,1,2,3", "6 columns (expected 7, as the header has)"},
      {"1,u,a,1,2,3,x,y", "8 columns (expected 7, as the header has)"},
      {"", "1 columns (expected 7, as the header has)"},
      {"2,u,a,1,2,3,x", "column 1 (click): '2' is not a label (0 or 1)"},
      {"1.0,u,a,1,2,3,x", "column 1 (click): '1.0' is not a label (0 or 1)"},
      {",u,a,1,2,3,x", "column 1 (click): '' is not a label (0 or 1)"},
      {"1,,a,1,2,3,x", "column 2 (user): '' is not a group id (empty)"},
      {"1,u,a,12h,2,3,x", "column 4 (hour): '12h' is not a number"},
      {"1,u,a, 12,2,3,x", "column 4 (hour): ' 12' is not a number"},
      {"1,u,a,0x1f,2,3,x", "column 4 (hour): '0x1f' is not a number"},
      {"1,u,a,inf,2,3,x", "column 4 (hour): 'inf' is not a finite number"},
      {"1,u,a,1.9,2,3,x",
       "column 4 (hour): '1.9' is not an integer (data.csv_numeric buckets "
       "integers by the Criteo rule; list real-valued columns in "
       "data.csv_value)"},
      {"1,u,a,1,1e-50,3,x", "column 5 (price): '1e-50' is too small for a "
                            "float (it would read as 0)"},
      {"1,u,a,1,abc,3,x", "column 5 (price): 'abc' is not a number"},
      {"1,u,a,1,NaN,3,x", "column 5 (price): 'NaN' is not a finite number"},
      {"1,u,a,1,2,-Infinity,x",
       "column 6 (ctr): '-Infinity' is not a finite number"},
      {"1,u,a,1,2,1e999,x",
       "column 6 (ctr): '1e999' is not a finite number (out of range)"},
      {"1,u,a,1,2,1e39,x",
       "column 6 (ctr): '1e39' is not a finite number (out of float range)"},
      {"1,u,a\"b,1,2,3,x", "column 3: a double quote inside an unquoted field "
                           "(quote the whole field, RFC 4180)"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    assert_int_equal(parse(s, bad[i].line, &ex, why), -1);
    if (strcmp(why, bad[i].why))
      fail_msg("'%s': got '%s', expected '%s'", bad[i].line, why, bad[i].why);
  }
  data_csv_schema_free(s);
}

/* libFM: with a values buffer, idx:x is taken (NaN/Inf still refused);
 * without one, only binary lines, as before. */
static void test_libfm_values(void **state) {
  (void)state;
  uint64_t keys[8];
  float vals[8];
  struct data_example ex = {.keys = keys, .vals = vals};
  char why[256];
  const char *l = "1 3:0.5 7:1 9:-2e-1";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 8, &ex, why, sizeof(why)),
                   0);
  assert_true(ex.valued);
  assert_int_equal(ex.nkeys, 3);
  assert_true(vals[0] == 0.5f && vals[1] == 1 && vals[2] == -0.2f);
  l = "0 3:1 7:1.0";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 8, &ex, why, sizeof(why)),
                   0);
  assert_false(ex.valued);
  l = "1 3:nan";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 8, &ex, why, sizeof(why)),
                   -1);
  assert_string_equal(why, "feature 1: value 'nan' is not a finite number");
  l = "1 3:1 4:x";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 8, &ex, why, sizeof(why)),
                   -1);
  assert_string_equal(why, "feature 2: value 'x' is not a number");
  ex.vals = NULL;
  l = "1 3:0.5";
  assert_int_equal(data_parse_libfm(l, strlen(l), 0, 8, &ex, why, sizeof(why)),
                   -1);
  assert_string_equal(why, "feature 1: value '0.5' is not 1 (only binary "
                           "features are supported)");
}

/* Random lines over the bytes that matter (delimiter, quotes, digits,
 * CR): the parser answers 0 with a 0/1 label or -1 with a reason, and
 * never reads or writes outside the line (ASan watches the exact-size
 * copy). */
static void test_random_lines(void **state) {
  (void)state;
  struct data_csv_schema *s = schema();
  uint64_t keys[4];
  float vals[4];
  struct data_example ex = {.keys = keys, .vals = vals};
  static const char alphabet[] = ",,,,\"\"01.e-na\r\n 9";
  uint64_t x = 12345;
  int good = 0;
  for (int i = 0; i < 20000; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    size_t len = (size_t)(x >> 59) + (size_t)((x >> 40) & 7);
    char *line = malloc(len ? len : 1);
    for (size_t j = 0; j < len; j++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      line[j] = alphabet[(x >> 33) % (sizeof(alphabet) - 1)];
    }
    char why[256] = "";
    int rc = data_parse_csv(s, line, len, &ex, why, sizeof(why));
    if (rc == 0) {
      assert_true(ex.label == 0.0f || ex.label == 1.0f);
      good++;
    } else {
      assert_int_equal(rc, -1);
      assert_true(why[0] != 0);
    }
    free(line);
  }
  assert_true(good < 20000); /* most random lines are malformed */
  data_csv_schema_free(s);
}

/* ---- the reader ---------------------------------------------------------- */

static void write_file(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

#define HEADER "click,user,ad,hour,price,ctr,req_id\n"

static int setup(void **state) {
  (void)state;
  assert_non_null(mkdtemp(dir));
  /* a.csv: a UTF-8 BOM, 3 data lines, one of them bad (line 3) */
  write_file("a.csv", "\xEF\xBB\xBF" HEADER "1,u1,a,1,2,3,r\n"
                      "9,u1,a,1,2,3,r\n"
                      "0,u2,b,5,0.5,1,r\n");
  write_file("b.csv", HEADER "1,u3,\"c,d\",7,1,1,r\n0,u3,e,,,,r\n");
  write_file("other.csv",
             "click,user,ad,hours,price,ctr,req_id\n1,u,a,1,2,3,r\n");
  write_file("short.csv", "click,user,ad\n1,u,a\n");
  write_file("empty.csv", "");
  write_file("nohead.txt", "1,u1,a,1,2,3,r\n0,u2,b,5,0.5,1,r\n");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd);
}

static struct reader *open_csv(const char *const *names, size_t n,
                               const struct data_csv_spec *sp, uint32_t rank,
                               uint32_t nranks, struct logger *lg, char *err) {
  char paths[4][256];
  const char *p[4];
  for (size_t i = 0; i < n; i++) {
    snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, names[i]);
    p[i] = paths[i];
  }
  struct reader_options o = {.format = READER_CSV,
                             .csv = sp,
                             .paths = p,
                             .npaths = n,
                             .rank = rank,
                             .nranks = nranks,
                             .bad_line_fraction = 0.5,
                             .report_first = 5,
                             .log = lg};
  return reader_open(&o, err, 512);
}

static void test_reader_headers_and_shares(void **state) {
  (void)state;
  struct data_csv_spec sp = spec();
  char err[512];
  struct logger *lg =
      logger_new("worker", 0, NULL, LOGGER_INFO, err, sizeof(err));
  FILE *cap = tmpfile();
  logger_set_stream(lg, cap);
  struct reader *r =
      open_csv((const char *const[]){"[ab].csv"}, 1, &sp, 0, 1, lg, err);
  if (!r)
    fail_msg("%s", err);
  assert_int_equal(reader_nfields(r), 4);
  uint64_t keys[4];
  float vals[4];
  struct data_example ex = {.keys = keys, .vals = vals};
  const float labels[] = {1, 0, 1, 0};
  int n = 0, rc;
  while ((rc = reader_next(r, &ex)) == 1) {
    assert_true(n < 4);
    assert_true(ex.label == labels[n]);
    n++;
  }
  assert_int_equal(rc, 0);
  assert_int_equal(n, 4);
  assert_int_equal(reader_lines(r), 5); /* data lines only, bad one too */
  assert_int_equal(reader_bad_lines(r), 1);
  /* b.csv's last line: ad 'e', the rest empty */
  assert_int_equal(keys[0], tok(0, "e"));
  for (uint32_t f = 1; f < 3; f++)
    assert_int_equal(keys[f], keys_missing_id(f));
  rewind(cap);
  char line[512], want[400];
  assert_non_null(fgets(line, sizeof(line), cap));
  snprintf(want, sizeof(want),
           "%s/a.csv:3: column 1 (click): '9' is not a label (0 or 1) (line "
           "skipped)",
           dir);
  if (!strstr(line, want))
    fail_msg("log '%s' lacks '%s'", line, want);
  fclose(cap);
  reader_free(r);
  logger_free(lg);

  /* two workers: data lines alternate, headers belong to nobody's share */
  for (uint32_t rank = 0; rank < 2; rank++) {
    r = open_csv((const char *const[]){"[ab].csv"}, 1, &sp, rank, 2, NULL, err);
    assert_non_null(r);
    n = 0;
    while ((rc = reader_next(r, &ex)) == 1)
      n++;
    assert_int_equal(rc, 0);
    /* data lines 0..4 (line 1 is a.csv's bad one): rank 0 gets 0, 2, 4;
     * rank 1 gets 1 (bad) and 3 */
    assert_int_equal(n, rank == 0 ? 3 : 1);
    assert_int_equal(reader_bad_lines(r), rank);
    reader_free(r);
  }
}

static void test_reader_header_errors(void **state) {
  (void)state;
  struct data_csv_spec sp = spec();
  char err[512], want[600];
  assert_null(open_csv((const char *const[]){"a.csv", "other.csv"}, 2, &sp, 0,
                       1, NULL, err));
  snprintf(want, sizeof(want),
           "%s/other.csv:1: header differs from %s/a.csv's: column 4 is "
           "'hours', expected 'hour'",
           dir, dir);
  assert_string_equal(err, want);
  assert_null(open_csv((const char *const[]){"a.csv", "short.csv"}, 2, &sp, 0,
                       1, NULL, err));
  snprintf(want, sizeof(want),
           "%s/short.csv:1: header differs from %s/a.csv's: 3 columns, "
           "expected 7",
           dir, dir);
  assert_string_equal(err, want);
  assert_null(open_csv((const char *const[]){"b.csv", "empty.csv"}, 2, &sp, 0,
                       1, NULL, err));
  snprintf(want, sizeof(want), "%s/empty.csv: empty, expected a header row",
           dir);
  assert_string_equal(err, want);
  /* the first file's header against the config */
  assert_null(
      open_csv((const char *const[]){"short.csv"}, 1, &sp, 0, 1, NULL, err));
  snprintf(want, sizeof(want),
           "%s/short.csv:1: data.csv_numeric: no column 'hour' (columns: "
           "'click', 'user', 'ad')",
           dir);
  assert_string_equal(err, want);
}

/* The training data's header, saved and loaded again, is what a later
 * reader (valid, test, predict) insists on, for its first file too. */
static void test_reader_expected_header(void **state) {
  (void)state;
  struct data_csv_spec sp = spec();
  char err[512], want[600], path[256];
  struct reader *r =
      open_csv((const char *const[]){"a.csv"}, 1, &sp, 0, 1, NULL, err);
  assert_non_null(r);
  assert_int_equal(reader_csv_schema(r)->ncols, 7);
  snprintf(path, sizeof(path), "%s/columns.txt", dir);
  assert_int_equal(reader_save_columns(r, path, err, sizeof(err)), 0);
  reader_free(r);
  char **names;
  size_t n;
  assert_int_equal(reader_load_columns(path, &names, &n, err, sizeof(err)), 1);
  assert_int_equal(n, 7);
  for (size_t c = 0; c < n; c++) {
    assert_string_equal(names[c], header[c]);
    free(names[c]);
  }
  free(names);
  snprintf(path, sizeof(path), "%s/none.txt", dir);
  assert_int_equal(reader_load_columns(path, &names, &n, err, sizeof(err)), 0);
  /* the same header passes; a different one fails on its first file */
  char p1[256], p2[256];
  snprintf(p1, sizeof(p1), "%s/b.csv", dir);
  snprintf(p2, sizeof(p2), "%s/other.csv", dir);
  struct reader_options o = {.format = READER_CSV,
                             .csv = &sp,
                             .csv_expect = (const char *const *)header,
                             .ncsv_expect = 7,
                             .paths = (const char *[]){p1},
                             .npaths = 1,
                             .nranks = 1};
  r = reader_open(&o, err, sizeof(err));
  assert_non_null(r);
  reader_free(r);
  o.paths = (const char *[]){p2};
  assert_null(reader_open(&o, err, sizeof(err)));
  snprintf(want, sizeof(want),
           "%s:1: header differs from the training data's: column 4 is "
           "'hours', expected 'hour'",
           p2);
  assert_string_equal(err, want);
}

static void test_reader_named_columns(void **state) {
  (void)state;
  struct data_csv_spec sp = spec();
  sp.columns = header;
  sp.ncolumns = 7;
  char err[512];
  struct reader *r =
      open_csv((const char *const[]){"nohead.txt"}, 1, &sp, 0, 1, NULL, err);
  assert_non_null(r);
  uint64_t keys[4];
  float vals[4];
  struct data_example ex = {.keys = keys, .vals = vals};
  int n = 0, rc;
  while ((rc = reader_next(r, &ex)) == 1)
    n++;
  assert_int_equal(rc, 0);
  assert_int_equal(n, 2); /* the first line is data */
  assert_int_equal(reader_bad_lines(r), 0);
  assert_true(vals[2] == 0.5f);
  reader_free(r);
  const char *const cols[] = {"click", "ad"};
  sp.columns = cols;
  sp.ncolumns = 2;
  assert_null(
      open_csv((const char *const[]){"nohead.txt"}, 1, &sp, 0, 1, NULL, err));
  assert_string_equal(err, "data.csv_columns: data.csv_group: no column 'user' "
                           "(columns: 'click', 'ad')");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schema_roles),
      cmocka_unit_test(test_schema_errors),
      cmocka_unit_test(test_split_rfc4180),
      cmocka_unit_test(test_parse_good_lines),
      cmocka_unit_test(test_parse_bad_lines),
      cmocka_unit_test(test_libfm_values),
      cmocka_unit_test(test_random_lines),
      cmocka_unit_test(test_reader_headers_and_shares),
      cmocka_unit_test(test_reader_header_errors),
      cmocka_unit_test(test_reader_expected_header),
      cmocka_unit_test(test_reader_named_columns),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
