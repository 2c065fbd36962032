/* logger: JSONL records are whole lines with the fixed fields; human lines
 * carry role and rank; a full disk is reported, not fatal. */
#include "common/logger.h"

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

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static void test_records(void **state) {
  (void)state;
  char path[] = "/tmp/maskps-logger-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char err[256];
  struct logger *lg = logger_new("worker", 3, path, LOGGER_INFO, err,
                                 sizeof(err));
  assert_non_null(lg);
  assert_int_equal(logger_record(lg, 120, "train", "loss", 0.4631,
                                 "samples_per_s", 51234.0, "bad", NAN, NULL),
                   0);
  assert_int_equal(logger_record_json(lg, 121, "amtl", "\"hist\":[1,2,3]"), 0);
  logger_free(lg);
  char *text = slurp(path);
  char *second = strchr(text, '\n');
  assert_non_null(second);
  *second++ = 0;
  assert_non_null(strstr(text, "{\"ts\":"));
  assert_non_null(strstr(text, ",\"role\":\"worker\",\"rank\":3,\"step\":120,"
                               "\"event\":\"train\",\"loss\":0.4631,"
                               "\"samples_per_s\":51234,\"bad\":null}"));
  assert_non_null(strstr(second, "\"step\":121,\"event\":\"amtl\","
                                 "\"hist\":[1,2,3]}\n"));
  unlink(path);
}

static void test_human_line(void **state) {
  (void)state;
  char err[256];
  struct logger *lg = logger_new("pserver", 1, NULL, LOGGER_WARN, err,
                                 sizeof(err));
  FILE *f = tmpfile();
  logger_set_stream(lg, f);
  logger_info(lg, "dropped below the level");
  logger_warn(lg, "cache over budget by %d MiB", 3);
  rewind(f);
  char line[256] = "";
  assert_non_null(fgets(line, sizeof(line), f));
  /* "HH:MM:SS.mmm pserver-1 warn: ..." */
  assert_string_equal(line + 13, "pserver-1 warn: cache over budget by 3 MiB\n");
  assert_null(fgets(line, sizeof(line), f));
  fclose(f);
  logger_free(lg);
  enum logger_level lv;
  assert_int_equal(logger_level_parse("error", &lv), 0);
  assert_int_equal(lv, LOGGER_ERROR);
  assert_int_equal(logger_level_parse("loud", &lv), -1);
}

static void test_full_disk_is_reported(void **state) {
  (void)state;
  char err[256];
  struct logger *lg = logger_new("worker", 0, "/dev/full", LOGGER_INFO, err,
                                 sizeof(err));
  assert_non_null(lg);
  FILE *f = tmpfile();
  logger_set_stream(lg, f);
  assert_int_equal(logger_record(lg, 1, "train", "loss", 1.0, NULL), -1);
  assert_int_equal(logger_record(lg, 2, "train", "loss", 1.0, NULL), -1);
  rewind(f);
  char line[256] = "";
  assert_non_null(fgets(line, sizeof(line), f));
  assert_non_null(strstr(line, "writing the metrics log failed"));
  assert_null(fgets(line, sizeof(line), f)); /* reported once */
  fclose(f);
  logger_free(lg);
}

static void test_bad_path(void **state) {
  (void)state;
  char err[256];
  assert_null(logger_new("worker", 0, "/nonexistent/dir/x.jsonl", LOGGER_INFO,
                         err, sizeof(err)));
  assert_string_equal(err, "cannot open log file /nonexistent/dir/x.jsonl: No "
                           "such file or directory");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_records),
      cmocka_unit_test(test_human_line),
      cmocka_unit_test(test_full_disk_is_reported),
      cmocka_unit_test(test_bad_path),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
