/* Helpers shared by the launcher tests (header-only, static; CTest globs
 * test_*.c only): the generated data set every end-to-end test trains on,
 * a test's config from YAML text and --set overrides, and removal of a
 * test's temporary tree. */
#ifndef MASKPS_TESTS_LAUNCHER_TESTLIB_H
#define MASKPS_TESTS_LAUNCHER_TESTLIB_H

#include "common/config.h"
#include "common/gen.h"

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static inline int testlib_rm_one(const char *path, const struct stat *sb,
                                 int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* The config of YAML text, then each "section.key=value" of sets
 * (NULL-terminated; sets itself may be NULL), validated: what a test's
 * `maskps train CONFIG --set ...` would run. NULL with the reason in err. */
static inline struct config *testlib_config(const char *text,
                                            const char *const *sets, char *err,
                                            size_t errlen) {
  struct config *cfg = config_new();
  int bad = config_read_string(cfg, text, strlen(text), "test", err, errlen);
  for (size_t i = 0; !bad && sets && sets[i]; i++)
    bad = config_set(cfg, sets[i], err, errlen);
  if (bad || config_validate(cfg, err, errlen)) {
    config_free(cfg);
    return NULL;
  }
  return cfg;
}

/* Removes a directory tree; ignores a missing one. */
static inline void testlib_rm_tree(const char *dir) {
  nftw(dir, testlib_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes rows 0..rows-1 of g into dir/{train,valid,test}.tsv, split
 * 0.8/0.1/0.1 by the generator's row hash; counts (may be NULL) receives
 * the rows of each part. Returns 0, or -1 if a file could not be written. */
static inline int testlib_write_split(const char *dir, const struct gen *g,
                                      uint64_t rows, uint64_t counts[3]) {
  const char *names[] = {"train", "valid", "test"};
  const double frac[] = {0.8, 0.1, 0.1};
  struct gen_out outs[3];
  struct gen_stats *st[3];
  int rc = 0, opened = 0;
  for (int i = 0; i < 3; i++) {
    char p[256];
    snprintf(p, sizeof(p), "%s/%s.tsv", dir, names[i]);
    st[i] = gen_stats_new();
    outs[i] = (struct gen_out){fopen(p, "w"), names[i], frac[i], st[i]};
    opened += outs[i].f != NULL;
  }
  char err[256];
  if (opened < 3 ||
      gen_write(g, 0, rows, outs, 3, NULL, NULL, err, sizeof(err)) != 0)
    rc = -1;
  for (int i = 0; i < 3; i++) {
    if (counts)
      counts[i] = st[i]->rows;
    if (outs[i].f && fclose(outs[i].f) != 0)
      rc = -1;
    gen_stats_free(st[i]);
  }
  return rc;
}

#endif
