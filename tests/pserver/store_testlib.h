/* Helpers shared by the store tests (header-only, static): a temporary
 * directory under /tmp removed afterwards, table and store constructors, and
 * a pull that returns freshly allocated arrays. Not a test itself (CTest
 * globs test_*.c only). */
#ifndef MASKPS_TESTS_STORE_TESTLIB_H
#define MASKPS_TESTS_STORE_TESTLIB_H

#include "pserver/store.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int rm_one(const char *path, const struct stat *sb, int flag,
                         struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* Removes a directory tree; ignores a missing one. */
static inline void rm_tree(const char *dir) {
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory /tmp/maskps-store-XXXXXX in buf (>= 64 bytes). */
static inline char *temp_dir(char *buf) {
  strcpy(buf, "/tmp/maskps-store-XXXXXX");
  if (!mkdtemp(buf)) {
    perror("mkdtemp");
    abort();
  }
  return buf;
}

static inline struct store_table make_table(uint32_t id, unsigned dim,
                                            enum row_opt opt) {
  struct store_table t;
  memset(&t, 0, sizeof(t));
  t.id = id;
  t.dim = dim;
  sparse_opt_defaults(&t.opt, opt);
  t.min_count = 1;
  t.init_std = 0.1f;
  t.seed = 1234;
  return t;
}

static inline struct store *open_with(const char *dir,
                                      const struct store_table *t, size_t nt,
                                      enum store_wal wal, size_t mb,
                                      size_t dense) {
  struct store_options o;
  store_options_defaults(&o);
  o.tables = t;
  o.ntables = nt;
  o.wal = wal;
  o.memory_mb = mb;
  o.dense_size = dense;
  char err[512];
  struct store *s = store_open(dir, &o, err, sizeof(err));
  if (!s)
    fprintf(stderr, "store_open: %s\n", err);
  return s;
}

/* Pull results for n keys of a table of dimension dim; free with
 * pulled_free. */
struct pulled {
  uint16_t *p;
  uint32_t *count, *clicks;
  uint8_t *flags;
  float *values;
  size_t *off; /* key i's values start at values + off[i] */
  long total;
};

static inline long pull_all(struct store *s, uint32_t table, unsigned dim,
                            size_t n, const uint64_t *keys, struct pulled *r) {
  r->p = calloc(n, sizeof(uint16_t));
  r->count = calloc(n, sizeof(uint32_t));
  r->clicks = calloc(n, sizeof(uint32_t));
  r->flags = calloc(n, 1);
  r->values = calloc(n * dim + 1, sizeof(float));
  r->off = calloc(n + 1, sizeof(size_t));
  struct store_pull_out out = {r->p, r->count, r->clicks, r->flags, r->values};
  char err[512];
  r->total = store_pull(s, table, n, keys, &out, err, sizeof(err));
  if (r->total < 0)
    fprintf(stderr, "store_pull: %s\n", err);
  for (size_t i = 0; r->total >= 0 && i < n; i++)
    r->off[i + 1] = r->off[i] + r->p[i];
  return r->total;
}

static inline void pulled_free(struct pulled *r) {
  free(r->p);
  free(r->count);
  free(r->clicks);
  free(r->flags);
  free(r->values);
  free(r->off);
}

#endif
