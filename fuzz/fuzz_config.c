/*
 * fuzz_config: libFuzzer target for the YAML config reader (common/config.h).
 *
 * The input is a config file's text. Properties checked:
 *   - config_read_string never crashes, and a rejection always has a message
 *     that names where (the file name given here, "fuzz.yaml");
 *   - an accepted config dumps to YAML that reads back to an equal config
 *     (the run directory's config.yaml must reproduce the run exactly).
 * Validation (cross-key checks) runs too, for its crashes, not its verdict.
 */
#include "common/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  struct config *cfg = config_new();
  err[0] = 0;
  if (config_read_string(cfg, (const char *)data, size, "fuzz.yaml", err,
                         sizeof(err)) != 0) {
    if (!err[0])
      die("rejected without a message", "(empty)");
    if (!strstr(err, "fuzz.yaml"))
      die("rejection does not name the file", err);
    config_free(cfg);
    return 0;
  }
  (void)config_validate(cfg, err, sizeof(err));
  char *dump = config_dump_string(cfg);
  struct config *again = config_new();
  if (config_read_string(again, dump, strlen(dump), "dump.yaml", err,
                         sizeof(err)) != 0)
    die("the dump of an accepted config does not read back", err);
  if (!config_equal(cfg, again))
    die("dump round trip changed the config", dump);
  config_free(again);
  free(dump);
  config_free(cfg);
  return 0;
}
