/* table: the offline tools over real RocksDB stores in a temporary
 * directory: resharding S=2 -> 3 -> 1 proves the same rows; D 16 -> 8 -> 16
 * truncates then pads from the deterministic init; fixed-D -> AMTL keeps
 * each row's prefix; export/import is bit-exact; a kill -9 mid-migration
 * leaves the source untouched and a re-run completes; and every refused job
 * (existing destination, wrong path, wrong set, version mismatch,
 * incompatible options, corrupt export) writes nothing; the maskps-table
 * program's exit codes and output.
 *
 * The crash child is this executable re-executed ("--child"), not a bare
 * fork: RocksDB's thread pools do not survive fork (see test_store_crash). */
#include "pserver/table.h"

#include "common/check.h"
#include "common/keys.h"
#include "store_testlib.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

enum { N = 10000, D = 16, D2 = 4, N2 = 2000, MAXS = 4 };
enum { T1 = 3, T2 = 7 }; /* table ids */

static char root[64];
static char self_exe[4096];

static uint64_t key_of(int i) {
  return keys_mix64((uint64_t)i * 0x9e3779b97f4a7c15ull + 17);
}
/* Occurrences given to key i by the first push: 1..2000, spread. */
static uint32_t count_of(int i) {
  return 1 + (uint32_t)(((unsigned)i * 7919u) % 2000u);
}

static struct store_table tables[2];

static void make_tables(void) {
  tables[0] = make_table(T1, D, ROW_OPT_ADAGRAD);
  tables[1] = make_table(T2, D2, ROW_OPT_ADAM);
  tables[1].min_count = 3;
  tables[1].seed = 99;
}

static const char *sub(const char *name) {
  static char buf[16][160];
  static int k;
  char *b = buf[k++ % 16];
  snprintf(b, 160, "%s/%s", root, name);
  return b;
}

/* Directory names "<root>/<name>-<r>" for r < s (the strings live in a
 * static pool, so a struct dirs copies freely). */
struct dirs {
  size_t n;
  const char *p[MAXS];
};

static struct dirs dirs_of(const char *name, size_t s) {
  struct dirs d;
  memset(&d, 0, sizeof(d));
  d.n = s;
  static char pool[128][160];
  static size_t used;
  for (size_t r = 0; r < s; r++) {
    assert_true(used < 128);
    char *b = pool[used++];
    snprintf(b, 160, "%s/%s-%zu", root, name, r);
    d.p[r] = b;
  }
  return d;
}

/* A trained S-shard set: table T1 (D, adagrad) with n1 rows pushed twice
 * (count_of(i) then 1 occurrence), table T2 (D2, adam, min_count 3) with
 * n2 rows, those seen < 3 times pending. Rows go to keys_shard(key, S). */
static struct dirs make_set(const char *name, size_t s, int n1, int n2) {
  struct dirs d = dirs_of(name, s);
  struct store *st[MAXS];
  for (size_t r = 0; r < s; r++) {
    st[r] = open_with(d.p[r], tables, 2, STORE_WAL_OFF, 16, 0);
    assert_non_null(st[r]);
  }
  enum { B = 256 };
  uint64_t keys[MAXS][B];
  uint32_t counts[MAXS][B];
  size_t nb[MAXS] = {0};
  float *g = malloc(sizeof(float) * B * D);
  char err[512];
  for (int pass = 0; pass < 3; pass++) {
    int n = pass < 2 ? n1 : n2;
    uint32_t table = pass < 2 ? T1 : T2;
    for (int i = 0; i <= n; i++) {
      for (size_t r = 0; r < s; r++) {
        if (nb[r] == 0 || (nb[r] < B && i < n))
          continue;
        for (size_t j = 0; j < nb[r] * D; j++)
          g[j] = 0.01f * (float)((int)((j * 31 + (size_t)pass) % 17) - 8);
        int rc = store_push(st[r], table, nb[r], keys[r], NULL, g, NULL,
                            pass == 1 ? NULL : counts[r], NULL,
                            (uint64_t)(pass + 1) * 10, err, sizeof(err));
        if (rc < 0)
          fail_msg("push: %s", err);
        nb[r] = 0;
      }
      if (i == n)
        break;
      uint64_t k = key_of(i);
      uint32_t r = keys_shard(k, (uint32_t)s);
      keys[r][nb[r]] = k;
      counts[r][nb[r]] = pass == 2 ? 1 + (uint32_t)i % 4 : count_of(i);
      nb[r]++;
    }
  }
  free(g);
  for (size_t r = 0; r < s; r++) {
    assert_int_equal(store_close(st[r], err, sizeof(err)), 0);
    struct table_layout l = {(uint32_t)s, (uint32_t)r, 2, tables};
    if (table_manifest_write(d.p[r], &l, err, sizeof(err)) < 0)
      fail_msg("%s", err);
  }
  return d;
}

static struct table_sum *sums_of(const struct dirs *d, size_t *ns) {
  struct table_sum *s = NULL;
  char err[1024];
  struct table_io io = {16, 0, NULL};
  if (table_verify(d->p, d->n, &io, &s, ns, err, sizeof(err)) < 0)
    fail_msg("verify: %s", err);
  return s;
}

static void assert_same_sums(const struct dirs *a, const struct dirs *b,
                             int full) {
  size_t na, nb;
  struct table_sum *x = sums_of(a, &na), *y = sums_of(b, &nb);
  assert_int_equal(na, nb);
  for (size_t k = 0; k < na; k++) {
    assert_int_equal(x[k].table, y[k].table);
    assert_int_equal(x[k].rows, y[k].rows);
    assert_int_equal(x[k].pending, y[k].pending);
    assert_int_equal(x[k].values_sum, y[k].values_sum);
    if (full)
      assert_int_equal(x[k].full_sum, y[k].full_sum);
  }
  free(x);
  free(y);
}

/* Every row of one table of a set, sorted by key. */
struct rows {
  size_t n;
  unsigned dim;
  uint64_t *fid;
  struct row *r; /* values/state point into vals/state below */
  float *vals, *state;
};

static int cmp_idx_fid(const void *a, const void *b, void *ctx) {
  const uint64_t *f = ctx;
  uint64_t x = f[*(const size_t *)a], y = f[*(const size_t *)b];
  return x < y ? -1 : x > y;
}

static struct rows read_rows(const struct dirs *d, uint32_t table) {
  struct rows out = {0};
  char err[512];
  size_t cap = 0;
  struct rows raw = {0};
  for (size_t s = 0; s < d->n; s++) {
    struct table_layout l;
    if (table_manifest_read(d->p[s], &l, err, sizeof(err)) < 0)
      fail_msg("%s", err);
    const struct store_table *t = NULL;
    for (size_t k = 0; k < l.ntables; k++)
      if (l.tables[k].id == table)
        t = &l.tables[k];
    assert_non_null(t);
    raw.dim = t->dim;
    struct store *st =
        open_with(d->p[s], l.tables, l.ntables, STORE_WAL_OFF, 16, 0);
    assert_non_null(st);
    struct store_iter *it = store_iter_new(st, table, err, sizeof(err));
    assert_non_null(it);
    uint64_t fid;
    struct row r;
    int rc;
    while ((rc = store_iter_next(it, &fid, &r, err, sizeof(err))) == 1) {
      if (raw.n == cap) {
        cap = cap ? 2 * cap : 1024;
        raw.fid = realloc(raw.fid, cap * sizeof(uint64_t));
        raw.r = realloc(raw.r, cap * sizeof(struct row));
        raw.vals = realloc(raw.vals, cap * raw.dim * sizeof(float));
        raw.state = realloc(raw.state, cap * 2 * raw.dim * sizeof(float));
      }
      raw.fid[raw.n] = fid;
      raw.r[raw.n] = r;
      memcpy(raw.vals + raw.n * raw.dim, r.values, r.p * sizeof(float));
      memcpy(raw.state + raw.n * 2 * raw.dim, r.state,
             row_slots((enum row_opt)r.opt) * r.p * sizeof(float));
      raw.n++;
    }
    assert_int_equal(rc, 0);
    store_iter_free(it);
    assert_int_equal(store_close(st, err, sizeof(err)), 0);
    table_layout_free(&l);
  }
  size_t *idx = malloc((raw.n + 1) * sizeof(size_t));
  for (size_t i = 0; i < raw.n; i++)
    idx[i] = i;
  qsort_r(idx, raw.n, sizeof(size_t), cmp_idx_fid, raw.fid);
  out.n = raw.n;
  out.dim = raw.dim;
  out.fid = malloc((raw.n + 1) * sizeof(uint64_t));
  out.r = malloc((raw.n + 1) * sizeof(struct row));
  out.vals = malloc((raw.n * raw.dim + 1) * sizeof(float));
  out.state = malloc((raw.n * 2 * raw.dim + 1) * sizeof(float));
  for (size_t i = 0; i < raw.n; i++) {
    size_t j = idx[i];
    out.fid[i] = raw.fid[j];
    out.r[i] = raw.r[j];
    memcpy(out.vals + i * out.dim, raw.vals + j * raw.dim,
           raw.dim * sizeof(float));
    memcpy(out.state + i * 2 * out.dim, raw.state + j * 2 * raw.dim,
           2 * raw.dim * sizeof(float));
    out.r[i].values = out.vals + i * out.dim;
    out.r[i].state = out.state + i * 2 * out.dim;
  }
  free(idx);
  free(raw.fid);
  free(raw.r);
  free(raw.vals);
  free(raw.state);
  return out;
}

static void rows_free(struct rows *r) {
  free(r->fid);
  free(r->r);
  free(r->vals);
  free(r->state);
}

/* Row-by-row, bit-exact: header, values, state. */
static void assert_rows_equal(const struct rows *a, const struct rows *b) {
  assert_int_equal(a->n, b->n);
  for (size_t i = 0; i < a->n; i++) {
    const struct row *x = &a->r[i], *y = &b->r[i];
    assert_int_equal(a->fid[i], b->fid[i]);
    assert_int_equal(x->p, y->p);
    assert_int_equal(x->opt, y->opt);
    assert_int_equal(x->flags, y->flags);
    assert_int_equal(x->count, y->count);
    assert_int_equal(x->clicks, y->clicks);
    assert_int_equal(x->last_step, y->last_step);
    assert_int_equal(x->opt_step, y->opt_step);
    assert_memory_equal(x->values, y->values, x->p * sizeof(float));
    if (row_slots((enum row_opt)x->opt) && x->p)
      assert_memory_equal(x->state, y->state,
                          row_slots((enum row_opt)x->opt) * x->p *
                              sizeof(float));
  }
}

/* Nothing at dest and no "<dest>.tmp-*" beside it. */
static void assert_no_trace(const char *dest) {
  struct stat st;
  assert_int_not_equal(stat(dest, &st), 0);
  const char *base = strrchr(dest, '/') + 1;
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s.tmp-", base);
  DIR *d = opendir(root);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, tmp, strlen(tmp)))
      fail_msg("left behind: %s", e->d_name);
  closedir(d);
}

static struct table_io quiet_io(void) {
  struct table_io io = {16, 0, NULL};
  return io;
}

static int migrate(const struct dirs *from, const struct dirs *to,
                   const struct table_migrate_opts *o,
                   struct table_migrate_report *rep, char *err, size_t errlen) {
  struct table_io io = quiet_io();
  return table_migrate(from->p, from->n, to->p, to->n, o, &io, rep, err,
                       errlen);
}

/* ---- fixtures --------------------------------------------------------- */

static struct dirs base2; /* the trained S=2 set, shared read-only */

static int setup(void **state) {
  (void)state;
  temp_dir(root);
  make_tables();
  base2 = make_set("base", 2, N, N2);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  rm_tree(root);
  return 0;
}

/* ---- tests ------------------------------------------------------------ */

static void test_fixture_is_what_the_tests_assume(void **state) {
  (void)state;
  size_t ns;
  struct table_sum *s = sums_of(&base2, &ns);
  assert_int_equal(ns, 2);
  assert_int_equal(s[0].table, T1);
  assert_int_equal(s[0].rows, N);
  assert_int_equal(s[0].pending, 0);
  assert_int_equal(s[1].table, T2);
  assert_int_equal(s[1].rows, N2);
  assert_int_equal(s[1].pending, N2 / 2); /* counts 1 and 2 of 1..4 */
  free(s);
  /* Both shards hold rows: the set really is split. */
  struct dirs one = {1, {base2.p[0]}};
  struct table_io io = quiet_io();
  struct table_sum *x = NULL;
  size_t nx;
  char err[512];
  assert_int_equal(table_verify(one.p, 1, &io, &x, &nx, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "give all 2 shards"));
}

static void test_reshard_2_3_1_same_rows(void **state) {
  (void)state;
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  struct dirs s3 = dirs_of("s3", 3), s1 = dirs_of("s1", 1);
  struct table_migrate_report rep;
  char err[1024];
  char *buf = NULL;
  size_t blen = 0;
  FILE *out = open_memstream(&buf, &blen);
  struct table_io io = {16, 0, out};
  if (table_migrate(base2.p, 2, s3.p, 3, &o, &io, &rep, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  fclose(out);
  /* It printed the source, expected and written sums, all equal. */
  assert_non_null(strstr(buf, "source table 3: rows 10000"));
  assert_non_null(strstr(buf, "written table 3: rows 10000"));
  const char *a = strstr(buf, "source table 3:") + 6,
             *b = strstr(buf, "written table 3:") + 7;
  assert_memory_equal(a, b, strcspn(a, "\n"));
  free(buf);
  assert_int_equal(rep.rows_in, N + N2);
  assert_int_equal(rep.rows_out, N + N2);
  assert_int_equal(rep.truncated + rep.padded + rep.filtered, 0);
  assert_same_sums(&base2, &s3, 1);
  if (migrate(&s3, &s1, &o, NULL, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  assert_same_sums(&base2, &s1, 1);
  /* Every shard of the 3-set holds rows of both tables. */
  for (size_t r = 0; r < 3; r++) {
    struct dirs one = {1, {s3.p[r]}};
    struct rows x = read_rows(&one, T1);
    assert_true(x.n > N / 5);
    for (size_t i = 0; i < x.n; i++)
      assert_int_equal(keys_shard(x.fid[i], 3), r);
    rows_free(&x);
  }
  for (int t = 0; t < 2; t++) {
    uint32_t id = t ? T2 : T1;
    struct rows x = read_rows(&base2, id), y = read_rows(&s1, id);
    assert_rows_equal(&x, &y);
    rows_free(&x);
    rows_free(&y);
  }
}

static void test_dim_16_8_16_truncates_then_pads_from_init(void **state) {
  (void)state;
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  o.dim = 8;
  struct dirs d8 = dirs_of("d8", 2), d16 = dirs_of("d16", 3);
  struct table_migrate_report rep;
  char err[1024];
  if (migrate(&base2, &d8, &o, &rep, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  /* T1 (D 16) truncated; T2 (D2 = 4 < 8) is fixed-D: padded to 8. */
  assert_int_equal(rep.truncated, N);
  assert_int_equal(rep.padded, N2 / 2);
  o.dim = 16;
  if (migrate(&d8, &d16, &o, &rep, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  assert_int_equal(rep.padded, N + N2 / 2);

  struct rows src = read_rows(&base2, T1), mid = read_rows(&d8, T1),
              end = read_rows(&d16, T1);
  assert_int_equal(src.n, N);
  assert_int_equal(mid.n, N);
  assert_int_equal(end.n, N);
  struct store *s =
      open_with(sub("init-probe"), tables, 2, STORE_WAL_OFF, 16, 0);
  assert_non_null(s);
  float init[D];
  size_t differ = 0;
  for (size_t i = 0; i < N; i++) {
    const struct row *a = &src.r[i], *m = &mid.r[i], *e = &end.r[i];
    assert_int_equal(m->p, 8);
    assert_int_equal(e->p, 16);
    assert_int_equal(m->count, a->count);
    assert_int_equal(e->opt_step, a->opt_step);
    assert_memory_equal(m->values, a->values, 8 * sizeof(float));
    assert_memory_equal(m->state, a->state, 8 * sizeof(float)); /* adagrad */
    assert_memory_equal(e->values, a->values, 8 * sizeof(float));
    assert_memory_equal(e->state, a->state, 8 * sizeof(float));
    assert_int_equal(store_init_values(s, T1, src.fid[i], init, D), 0);
    assert_memory_equal(e->values + 8, init + 8, 8 * sizeof(float));
    for (int j = 8; j < 16; j++)
      assert_true(e->state[j] == 0.1f); /* fresh adagrad accumulator */
    differ += memcmp(e->values + 8, a->values + 8, 8 * sizeof(float)) != 0;
  }
  /* The trained tail is really gone (training moved it off the init). */
  assert_int_equal(differ, N);
  char e2[256];
  store_close(s, e2, sizeof(e2));
  rows_free(&src);
  rows_free(&mid);
  rows_free(&end);
  /* The manifest records the new D. */
  struct table_layout l;
  assert_int_equal(table_manifest_read(d16.p[2], &l, err, sizeof(err)), 0);
  assert_int_equal(l.shards, 3);
  assert_int_equal(l.rank, 2);
  assert_int_equal(l.tables[0].dim, 16);
  assert_int_equal(l.tables[1].dim, 16);
  table_layout_free(&l);
}

static void test_fixed_to_amtl_keeps_each_prefix(void **state) {
  (void)state;
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  o.amtl = 1;
  o.prefix = TABLE_PREFIX_FREQ;
  o.full_count = 1000;
  o.min_prefix = 2;
  struct dirs am = dirs_of("amtl", 2);
  char err[1024];
  if (migrate(&base2, &am, &o, NULL, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  struct rows src = read_rows(&base2, T1), dst = read_rows(&am, T1);
  assert_int_equal(dst.n, N);
  unsigned seen[D + 1] = {0};
  for (size_t i = 0; i < N; i++) {
    const struct row *a = &src.r[i], *b = &dst.r[i];
    /* The documented rule, computed here independently. */
    double x = ceil(16.0 * log1p((double)a->count) / log1p(1000.0));
    unsigned want = x > 16 ? 16 : x < 2 ? 2 : (unsigned)x;
    assert_int_equal(b->p, want);
    assert_memory_equal(b->values, a->values, want * sizeof(float));
    assert_memory_equal(b->state, a->state, want * sizeof(float));
    assert_int_equal(b->opt_step, a->opt_step);
    seen[want] = 1;
  }
  unsigned distinct = 0;
  for (int p = 0; p <= D; p++)
    distinct += seen[p];
  assert_true(distinct >= 8);
  /* Pending rows of T2 stay pending. */
  struct rows s2 = read_rows(&base2, T2), d2 = read_rows(&am, T2);
  for (size_t i = 0; i < s2.n; i++)
    assert_int_equal(d2.r[i].p == 0, s2.r[i].p == 0);
  rows_free(&s2);
  rows_free(&d2);
  rows_free(&src);
  rows_free(&dst);

  /* "keep" back to fixed D: prefixes padded from init, so the values of the
   * kept prefix survive the round trip. */
  table_migrate_defaults(&o);
  o.amtl = 0;
  struct dirs back = dirs_of("amtl-back", 1);
  if (migrate(&am, &back, &o, NULL, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  struct rows bb = read_rows(&back, T1), aa = read_rows(&am, T1);
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(bb.r[i].p, D);
    assert_memory_equal(bb.r[i].values, aa.r[i].values,
                        aa.r[i].p * sizeof(float));
  }
  rows_free(&bb);
  rows_free(&aa);
}

static void test_filters_and_state(void **state) {
  (void)state;
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  o.min_count = 500;
  o.drop_state = 1;
  struct dirs f = dirs_of("filt", 1);
  struct table_migrate_report rep;
  char err[1024];
  if (migrate(&base2, &f, &o, &rep, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  /* T1 counts are count_of(i) + 1; T2 counts are 1..4, all dropped. */
  uint64_t want = 0;
  for (int i = 0; i < N; i++)
    want += count_of(i) + 1 >= 500;
  assert_int_equal(rep.rows_out, want);
  assert_int_equal(rep.filtered, N + N2 - want);
  struct rows r = read_rows(&f, T1);
  assert_int_equal(r.n, want);
  for (size_t i = 0; i < r.n; i++) {
    assert_true(r.r[i].count >= 500);
    assert_int_equal(r.r[i].opt_step, 0);
    for (int j = 0; j < D; j++)
      assert_true(r.r[i].state[j] == 0.1f);
  }
  rows_free(&r);
  /* A change of optimizer starts fresh state of the new kind. */
  table_migrate_defaults(&o);
  o.opt = ROW_OPT_SGD;
  struct dirs g = dirs_of("sgd", 1);
  if (migrate(&base2, &g, &o, NULL, err, sizeof(err)) < 0)
    fail_msg("migrate: %s", err);
  struct rows s = read_rows(&g, T1);
  assert_int_equal(s.n, N);
  assert_int_equal(s.r[0].opt, ROW_OPT_SGD);
  rows_free(&s);
}

static void test_export_import_round_trip(void **state) {
  (void)state;
  const char *ex = sub("export");
  struct table_io io = quiet_io();
  char err[1024];
  if (table_export(base2.p, 2, ex, 1, &io, err, sizeof(err)) < 0)
    fail_msg("export: %s", err);
  char f1[256], f2[256];
  snprintf(f1, sizeof(f1), "%s/table-%d.mpt", ex, T1);
  snprintf(f2, sizeof(f2), "%s/table-%d.mpt", ex, T2);
  struct stat st;
  assert_int_equal(stat(f1, &st), 0);
  /* header + N records of 32 + 4 D (1 + 1 adagrad slot) + trailer */
  assert_int_equal(st.st_size, TABLE_EXPORT_HEADER_LEN + N * (32 + 4 * D * 2) +
                                   TABLE_EXPORT_TRAILER_LEN);
  /* The first record reads as documented: key at 0, p at 28. */
  FILE *f = fopen(f1, "rb");
  uint8_t rec[32];
  fseek(f, TABLE_EXPORT_HEADER_LEN, SEEK_SET);
  assert_int_equal(fread(rec, 1, 32, f), 32);
  fclose(f);
  assert_int_equal(rec[28] | rec[29] << 8, D);

  const char *files[2] = {f2, f1}; /* any order */
  struct dirs im = dirs_of("imported", 3);
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  if (table_import(files, 2, im.p, 3, &o, &io, NULL, err, sizeof(err)) < 0)
    fail_msg("import: %s", err);
  assert_same_sums(&base2, &im, 1);
  for (int t = 0; t < 2; t++) {
    uint32_t id = t ? T2 : T1;
    struct rows x = read_rows(&base2, id), y = read_rows(&im, id);
    assert_rows_equal(&x, &y);
    rows_free(&x);
    rows_free(&y);
  }

  /* Values only: the values sums survive, the state starts fresh. */
  const char *ex2 = sub("export-nostate");
  if (table_export(base2.p, 2, ex2, 0, &io, err, sizeof(err)) < 0)
    fail_msg("export: %s", err);
  char g1[256];
  snprintf(g1, sizeof(g1), "%s/table-%d.mpt", ex2, T1);
  assert_int_equal(stat(g1, &st), 0);
  assert_int_equal(st.st_size, TABLE_EXPORT_HEADER_LEN + N * (32 + 4 * D) +
                                   TABLE_EXPORT_TRAILER_LEN);
  const char *one[1] = {g1};
  struct dirs vo = dirs_of("values-only", 1);
  if (table_import(one, 1, vo.p, 1, &o, &io, NULL, err, sizeof(err)) < 0)
    fail_msg("import: %s", err);
  struct rows r = read_rows(&vo, T1), b = read_rows(&base2, T1);
  for (size_t i = 0; i < N; i++) {
    assert_memory_equal(r.r[i].values, b.r[i].values, D * sizeof(float));
    assert_int_equal(r.r[i].opt_step, 0);
  }
  rows_free(&r);
  rows_free(&b);
}

/* Copies src to dst with byte `at` xor-ed by x (or truncated to `at` bytes
 * when x == 0). */
static void copy_damaged(const char *src, const char *dst, long at, int x) {
  FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
  assert_non_null(a);
  assert_non_null(b);
  int c;
  long i = 0;
  while ((c = fgetc(a)) != EOF) {
    if (x == 0 && i == at)
      break;
    fputc(i == at ? c ^ x : c, b);
    i++;
  }
  fclose(a);
  fclose(b);
}

static void test_import_refuses_bad_files(void **state) {
  (void)state;
  const char *ex = sub("export-bad");
  struct table_io io = quiet_io();
  char err[1024];
  if (table_export(base2.p, 2, ex, 1, &io, err, sizeof(err)) < 0)
    fail_msg("export: %s", err);
  char good[256];
  snprintf(good, sizeof(good), "%s/table-%d.mpt", ex, T1);
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  struct {
    long at;
    int x;
    const char *msg;
  } cases[] = {
      {8, 2, "version 3"},              /* version 1 -> 3 */
      {0, 1, "not a maskps-table"},     /* magic */
      {64 + 40, 0x40, "corrupt"},       /* a value bit: trailer checksum */
      {64 + 100, 0, "truncated"},       /* cut mid-record */
      {64 + 28, 0x80, "prefix length"}, /* p > D */
  };
  for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
    const char *bad = sub("bad.mpt");
    copy_damaged(good, bad, cases[c].at, cases[c].x);
    const char *files[1] = {bad};
    const char *dest = sub("bad-import");
    int rc = table_import(files, 1, &dest, 1, &o, &io, NULL, err, sizeof(err));
    assert_int_equal(rc, -1);
    if (!strstr(err, cases[c].msg))
      fail_msg("case %zu: '%s' lacks '%s'", c, err, cases[c].msg);
    assert_no_trace(dest);
    remove(bad);
  }
}

/* The crash child: migrate with the kill hook armed; never returns. */
static int child_main(char **argv) {
  make_tables();
  const char *from[2] = {argv[2], argv[3]};
  const char *to[3] = {argv[4], argv[5], argv[6]};
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  struct table_io io = {16, 0, NULL};
  char err[1024];
  int rc = table_migrate(from, 2, to, 3, &o, &io, NULL, err, sizeof(err));
  fprintf(stderr, "child: migrate returned %d (%s)\n", rc, rc ? err : "");
  return 3; /* reached only if the hook did not fire */
}

static void test_kill_mid_migration_then_rerun(void **state) {
  (void)state;
  size_t ns;
  struct table_sum *before = sums_of(&base2, &ns);
  struct dirs to = dirs_of("crash", 3);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("MASKPS_TABLE_KILL_AFTER", "4000", 1);
    char *args[] = {self_exe,           "--child",
                    (char *)base2.p[0], (char *)base2.p[1],
                    (char *)to.p[0],    (char *)to.p[1],
                    (char *)to.p[2],    NULL};
    execv(self_exe, args);
    _exit(4);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
  /* The destination is not there; the child's temporaries are. */
  struct stat st;
  char tmp[256];
  for (int r = 0; r < 3; r++) {
    assert_int_not_equal(stat(to.p[r], &st), 0);
    snprintf(tmp, sizeof(tmp), "%s.tmp-%d", to.p[r], (int)pid);
    assert_int_equal(stat(tmp, &st), 0);
  }
  /* The source is untouched. */
  size_t na;
  struct table_sum *after = sums_of(&base2, &na);
  assert_int_equal(na, ns);
  assert_memory_equal(before, after, ns * sizeof(*before));
  free(after);
  /* A re-run completes, removes the dead run's temporaries, and proves the
   * same rows. */
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  char err[1024];
  if (migrate(&base2, &to, &o, NULL, err, sizeof(err)) < 0)
    fail_msg("re-run: %s", err);
  for (int r = 0; r < 3; r++) {
    snprintf(tmp, sizeof(tmp), "%s.tmp-%d", to.p[r], (int)pid);
    assert_int_not_equal(stat(tmp, &st), 0);
  }
  assert_same_sums(&base2, &to, 1);
  free(before);
}

static void test_refused_jobs_write_nothing(void **state) {
  (void)state;
  struct table_migrate_opts o;
  table_migrate_defaults(&o);
  char err[1024];
  struct table_io io = quiet_io();
  size_t ns;
  struct table_sum *before = sums_of(&base2, &ns);

  /* A destination that holds data. */
  const char *full = sub("full");
  mkdir(full, 0755);
  char marker[256];
  snprintf(marker, sizeof(marker), "%s/keep-me", full);
  FILE *f = fopen(marker, "w");
  fputs("x", f);
  fclose(f);
  const char *dests[2] = {sub("ok-dest"), full};
  assert_int_equal(
      table_migrate(base2.p, 2, dests, 2, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "already holds data"));
  assert_no_trace(dests[0]);
  DIR *d = opendir(full);
  int entries = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    entries++;
  closedir(d);
  assert_int_equal(entries, 3); /* ., .., keep-me */

  /* An empty destination directory is fine (replaced). */
  const char *empty = sub("empty-dest");
  mkdir(empty, 0755);
  assert_int_equal(
      table_migrate(base2.p, 2, &empty, 1, &o, &io, NULL, err, sizeof(err)), 0);

  /* Wrong source path, a directory without a manifest, an incomplete set,
   * a destination whose parent is missing. */
  const char *dest = sub("never");
  const char *nosuch[2] = {sub("no-such-dir"), base2.p[1]};
  assert_int_equal(
      table_migrate(nosuch, 2, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "no such directory"));
  assert_no_trace(dest);
  const char *bare_dir = sub("bare");
  mkdir(bare_dir, 0755);
  assert_int_equal(
      table_migrate(&bare_dir, 1, &dest, 1, &o, &io, NULL, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "no maskps-table.json"));
  assert_no_trace(dest);
  assert_int_equal(
      table_migrate(base2.p, 1, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "give all 2 shards"));
  assert_no_trace(dest);
  const char *same[2] = {base2.p[0], base2.p[0]};
  assert_int_equal(
      table_migrate(same, 2, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "both shard 0"));
  const char *orphan = sub("no-parent/x");
  assert_int_equal(
      table_migrate(base2.p, 2, &orphan, 1, &o, &io, NULL, err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "parent directory"));

  /* Incompatible options. */
  o.prefix = TABLE_PREFIX_FREQ; /* without amtl = 1 */
  assert_int_equal(
      table_migrate(base2.p, 2, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "amtl"));
  assert_no_trace(dest);
  table_migrate_defaults(&o);
  o.amtl = 1;
  o.min_prefix = 9;
  o.dim = 8;
  assert_int_equal(
      table_migrate(base2.p, 2, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "min prefix"));
  assert_no_trace(dest);
  table_migrate_defaults(&o);
  o.amtl = 1;
  o.min_prefix = 5; /* > D2 = 4 of table 7 */
  assert_int_equal(
      table_migrate(base2.p, 2, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "min prefix"));
  assert_no_trace(dest);

  /* Manifest version mismatch, and a manifest that lies about the set. */
  struct dirs v = make_set("ver", 1, 50, 10);
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", v.p[0], TABLE_MANIFEST);
  f = fopen(path, "r+");
  char text[4096];
  size_t n = fread(text, 1, sizeof(text) - 1, f);
  text[n] = 0;
  char *ver = strstr(text, "\"version\": 1");
  assert_non_null(ver);
  ver[11] = '2';
  rewind(f);
  fwrite(text, 1, n, f);
  fclose(f);
  assert_int_equal(
      table_migrate(v.p, 1, &dest, 1, &o, &io, NULL, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "manifest version 2"));
  assert_no_trace(dest);
  struct table_sum *s = NULL;
  assert_int_equal(table_verify(v.p, 1, &io, &s, &ns, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "version"));

  /* Ranks swapped in the manifests: verify finds the misplaced rows. */
  struct dirs sw = make_set("swap", 2, 200, 10);
  struct table_layout l0 = {2, 1, 2, tables}, l1 = {2, 0, 2, tables};
  assert_int_equal(table_manifest_write(sw.p[0], &l0, err, sizeof(err)), 0);
  assert_int_equal(table_manifest_write(sw.p[1], &l1, err, sizeof(err)), 0);
  assert_int_equal(table_verify(sw.p, 2, &io, &s, &ns, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "rows are stored in a shard"));

  /* Malformed manifests. */
  const char *bad[] = {"{", "[]", "{\"format\": \"other\"}",
                       "{\"format\": \"maskps-table\", \"version\": 1, "
                       "\"row_version\": 1, \"shards\": 1, \"rank\": 1, "
                       "\"tables\": []}"};
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    snprintf(path, sizeof(path), "%s/%s", v.p[0], TABLE_MANIFEST);
    f = fopen(path, "w");
    fputs(bad[i], f);
    fclose(f);
    struct table_layout l;
    assert_int_equal(table_manifest_read(v.p[0], &l, err, sizeof(err)), -1);
    assert_non_null(strstr(err, v.p[0]));
  }

  /* The source never changed. */
  struct table_sum *after = sums_of(&base2, &ns);
  assert_memory_equal(before, after, ns * sizeof(*before));
  free(before);
  free(after);
}

static void test_inspect_reports_layout_and_histogram(void **state) {
  (void)state;
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  struct table_io io = {16, 0, out};
  char err[1024];
  assert_int_equal(table_inspect(base2.p, 2, &io, err, sizeof(err)), 0);
  fclose(out);
  assert_non_null(strstr(buf, "shard 0 of 2"));
  assert_non_null(strstr(buf, "shard 1 of 2"));
  assert_non_null(strstr(buf, "table 3: D 16, opt adagrad, amtl 0"));
  assert_non_null(strstr(buf, "table 7: D 4, opt adam"));
  assert_non_null(strstr(buf, "table 3: rows 10000, pending 0"));
  assert_non_null(strstr(buf, "table 7: rows 2000, pending 1000"));
  /* T1 row bytes: 32 + 4*16*2 = 160 per row. */
  assert_non_null(strstr(buf, "row bytes 1600000"));
  free(buf);
  const char *nope = sub("nope");
  assert_int_equal(table_inspect(&nope, 1, &io, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "no such directory"));
}

/* Runs the maskps-table program (built beside this test) with args; its
 * stdout and stderr go to *out (malloc'ed). Returns its exit status. */
static int run_tool(char **out, const char *a0, ...) {
  char exe[4200];
  snprintf(exe, sizeof(exe), "%s", self_exe);
  char *slash = strrchr(exe, '/');
  assert_non_null(slash);
  strcpy(slash, "/../../pserver/maskps-table");
  if (access(exe, X_OK) != 0)
    fail_msg("%s not built (build the maskps-table target)", exe);
  const char *argv[32] = {exe, a0};
  int n = 2;
  va_list ap;
  va_start(ap, a0);
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < 31)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  const char *log = sub("tool.log");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    FILE *f = freopen(log, "w", stdout);
    if (!f || dup2(1, 2) < 0)
      _exit(99);
    execv(exe, (char *const *)argv);
    _exit(98);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  FILE *f = fopen(log, "r");
  assert_non_null(f);
  *out = calloc(1, 1 << 16);
  size_t got = fread(*out, 1, (1 << 16) - 1, f);
  (*out)[got] = 0;
  fclose(f);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void test_program_exit_codes_and_output(void **state) {
  (void)state;
  char *o;
  const char *b0 = base2.p[0], *b1 = base2.p[1];
  assert_int_equal(run_tool(&o, "verify", b1, b0, NULL), 0);
  assert_non_null(strstr(o, "verify table 3: rows 10000 pending 0"));
  free(o);
  const char *c0 = sub("cli-0"), *c1 = sub("cli-1");
  assert_int_equal(run_tool(&o, "migrate", "--from", b0, b1, "--to", c0, c1,
                            "--dim", "8", "--quiet", NULL),
                   0);
  assert_non_null(strstr(o, "written table 3: rows 10000"));
  assert_non_null(strstr(o, "migrate: 12000 rows read, 12000 written"));
  free(o);
  assert_int_equal(run_tool(&o, "inspect", c0, c1, NULL), 0);
  assert_non_null(strstr(o, "table 3: D 8, opt adagrad"));
  assert_non_null(strstr(o, "prefix histogram: 8:"));
  free(o);
  const char *ex = sub("cli-ex"), *im = sub("cli-im");
  assert_int_equal(run_tool(&o, "export", "--from", b0, b1, "--to", ex, NULL),
                   0);
  free(o);
  char f3[256], f7[256];
  snprintf(f3, sizeof(f3), "%s/table-3.mpt", ex);
  snprintf(f7, sizeof(f7), "%s/table-7.mpt", ex);
  assert_int_equal(
      run_tool(&o, "import", "--from", f3, f7, "--to", im, "--quiet", NULL), 0);
  assert_non_null(strstr(o, "import: 12000 rows read"));
  free(o);
  struct dirs imd = {1, {im}};
  assert_same_sums(&base2, &imd, 1);
  /* Failures: 1 with the library's message; usage errors: 2. */
  assert_int_equal(
      run_tool(&o, "migrate", "--from", b0, "--to", sub("cli-x"), NULL), 1);
  assert_non_null(strstr(o, "give all 2 shards"));
  free(o);
  assert_int_equal(run_tool(&o, "migrate", "--from", b0, b1, "--to", c0, NULL),
                   1);
  assert_non_null(strstr(o, "already holds data"));
  free(o);
  assert_int_equal(run_tool(&o, "migrate", "--from", b0, b1, "--to",
                            sub("cli-x"), "--dim", "0", NULL),
                   2);
  free(o);
  assert_int_equal(run_tool(&o, "bogus", NULL), 2);
  assert_non_null(strstr(o, "unknown command"));
  free(o);
  assert_int_equal(run_tool(&o, "inspect", NULL), 2);
  free(o);
  assert_no_trace(sub("cli-x"));
}

int main(int argc, char **argv) {
  if (argc >= 7 && !strcmp(argv[1], "--child"))
    return child_main(argv);
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
  if (n <= 0)
    return 1;
  self_exe[n] = 0;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_is_what_the_tests_assume),
      cmocka_unit_test(test_reshard_2_3_1_same_rows),
      cmocka_unit_test(test_dim_16_8_16_truncates_then_pads_from_init),
      cmocka_unit_test(test_fixed_to_amtl_keeps_each_prefix),
      cmocka_unit_test(test_filters_and_state),
      cmocka_unit_test(test_export_import_round_trip),
      cmocka_unit_test(test_import_refuses_bad_files),
      cmocka_unit_test(test_kill_mid_migration_then_rerun),
      cmocka_unit_test(test_refused_jobs_write_nothing),
      cmocka_unit_test(test_inspect_reports_layout_and_histogram),
      cmocka_unit_test(test_program_exit_codes_and_output),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
