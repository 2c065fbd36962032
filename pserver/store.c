/* The shard store; see store.h. The only file that includes rocksdb/c.h:
 * RocksDB's errors (malloc'ed strings) are turned into err messages here. */
#include "pserver/store.h"

#include "common/check.h"
#include "common/keys.h"
#include "pserver/cache.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

enum { CF_DEFAULT, CF_ROWS, CF_DENSE, CF_COUNT_ };
static const char *const cf_names[CF_COUNT_] = {"default", "rows", "dense"};

#define DENSE_MAGIC 0x4453504du /* "MPSD" little-endian */
#define DENSE_VERSION 1u
#define DENSE_HEADER 12 /* magic, version, float count */

/* Keys per MultiGet call when loading cache misses (see load()). */
#define LOAD_CHUNK 256

/* Where a key's bytes came from in one pull/push. */
enum { SRC_NONE, SRC_CACHE, SRC_DB, SRC_EXPIRED };

struct store {
  char *dir;
  struct store_table *tables; /* sorted by id */
  size_t ntables;
  enum store_wal wal;

  rocksdb_t *db;
  rocksdb_options_t *dbopt;
  rocksdb_options_t *cfopt[CF_COUNT_];
  rocksdb_column_family_handle_t *cf[CF_COUNT_];
  rocksdb_block_based_table_options_t *bbto;
  rocksdb_cache_t *block_cache;
  size_t block_cache_budget;
  rocksdb_compactionfilter_t *ttl_filter;
  rocksdb_readoptions_t *ro;
  rocksdb_writeoptions_t *wo;
  rocksdb_writebatch_t *batch; /* the current operation's writes */

  struct cache *cache;
  _Atomic uint64_t max_step; /* largest step pushed: the TTL clock */
  _Atomic uint64_t expired;  /* rows the TTL filter dropped */
  uint64_t admitted;
  uint64_t last_trim_ns; /* clock_ns of the last trim_heap */

  /* dense shard: value, Adam moments and per-entry step counts */
  size_t dense_n;
  float *dw, *dm, *dv;
  uint32_t *dt;
  uint8_t *ddirty; /* per chunk */
  int dense_loaded;
  struct sparse_opt dopt;
  /* the learning rates the store was opened with (store_set_lr_scale
   * scales these, so a scale is absolute, never compounded) */
  float *lr0; /* [ntables] */
  float dlr0;

  /* per-operation scratch, grown on demand */
  uint8_t *arena;
  size_t arena_cap, arena_len;
  float *work; /* values[ROW_MAX_DIM], state[2 * ROW_MAX_DIM], tmp, g */
  uint8_t *enc;
  /* per-operation key arrays (struct loaded's, the miss list, sorted keys),
   * kept between operations: allocating them per pull/push cost a malloc
   * and a page-faulting calloc of up to ~200 KB each time */
  size_t ld_cap;
  size_t *ld_off;
  const uint8_t **ld_ptr;
  uint32_t *ld_len;
  uint8_t *ld_src;
  struct row *ld_hdr;
  size_t *ld_miss;
  uint64_t *ld_sorted; /* also the duplicate check's set (uint32 slots) */

  /* tables across time (see the end of this file) */
  int read_only;
  int (*warm_get)(void *, const struct store_table *, uint64_t, uint8_t *,
                  size_t, size_t *, char *, size_t);
  void *warm_ctx;
  void (*warm_free)(void *);
  unsigned bulk_seq; /* bulk loads started, for unique SST file names */
};

/* ---- small helpers ---------------------------------------------------- */

/* Moves a RocksDB error string into err with context; frees it. */
static int rerr(char *err, size_t errlen, char *rocks, const char *what,
                const char *dir) {
  snprintf(err, errlen, "store %s: %s: %s", dir, what,
           rocks ? rocks : "unknown RocksDB error");
  rocksdb_free(rocks);
  return -1;
}

static const struct store_table *find_table(const struct store *s,
                                            uint32_t id) {
  size_t lo = 0, hi = s->ntables;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->tables[mid].id == id)
      return &s->tables[mid];
    if (s->tables[mid].id < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static int cmp_table(const void *a, const void *b) {
  uint32_t x = ((const struct store_table *)a)->id,
           y = ((const struct store_table *)b)->id;
  return (x > y) - (x < y);
}

static int admits_at_once(const struct store_table *t) {
  return t->min_count <= 1;
}

static int is_expired(const struct store_table *t, uint64_t last_step,
                      uint64_t now) {
  return t->ttl_steps > 0 && now > last_step && now - last_step > t->ttl_steps;
}

static void note_step(struct store *s, uint64_t step) {
  uint64_t cur = atomic_load(&s->max_step);
  while (step > cur && !atomic_compare_exchange_weak(&s->max_step, &cur, step))
    ;
}

/* A uniform double in (0, 1) from 53 bits of h: never 0, so log() is safe. */
static double unit(uint64_t h) {
  return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Entries [from, to) of the deterministic init of (table, fid), written at
 * out[from..to). Pair i of N(0,1) draws (dims 2i, 2i+1) comes from
 * Box-Muller on two hashes of (seed, table, fid, i): independent of D and
 * of every other key. */
static void init_values(const struct store_table *t, uint64_t fid, float *out,
                        unsigned from, unsigned to) {
  const uint64_t k = keys_mix64(keys_mix64(t->seed) ^
                                keys_mix64(0x7461626c65ull + t->id) ^ fid);
  for (unsigned j = from; j < to; j++) {
    if (t->init_std == 0) {
      out[j] = 0.0f;
      continue;
    }
    const uint64_t i = j / 2;
    const double u1 = unit(keys_mix64(k + 2 * i)),
                 u2 = unit(keys_mix64(k + 2 * i + 1));
    const double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
    out[j] = (float)(t->init_std * r * (j % 2 ? sin(a) : cos(a)));
  }
}

int store_init_values(const struct store *s, uint32_t table, uint64_t fid,
                      float *out, unsigned d) {
  const struct store_table *t = find_table(s, table);
  if (!t || d > t->dim)
    return -1;
  init_values(t, fid, out, 0, d);
  return 0;
}

/* ---- writes ----------------------------------------------------------- */

static void writeback(void *ctx, uint32_t table, uint64_t fid, const void *data,
                      size_t len) {
  struct store *s = ctx;
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(table, fid, k);
  rocksdb_writebatch_put_cf(s->batch, s->cf[CF_ROWS], (const char *)k,
                            sizeof(k), data, len);
}

/* Writes the pending batch (if any) with the WAL policy's options. */
static int commit(struct store *s, char *err, size_t errlen) {
  if (rocksdb_writebatch_count(s->batch) == 0)
    return 0;
  char *e = NULL;
  rocksdb_write(s->db, s->wo, s->batch, &e);
  rocksdb_writebatch_clear(s->batch);
  if (e)
    return rerr(err, errlen, e, "write", s->dir);
  return 0;
}

/* Writes every dirty cached row back in WriteBatches of at most
 * FLUSH_CHUNK rows: one batch of the whole row cache would double the
 * memory the cache holds (the batch is a copy) and overrun the memtable
 * budget in one write. Returns 0 or -1. */
#define FLUSH_CHUNK 4096
static int writeback_all(struct store *s, char *err, size_t errlen) {
  if (commit(s, err, errlen) < 0)
    return -1;
  while (cache_flush_some(s->cache, FLUSH_CHUNK) > 0)
    if (commit(s, err, errlen) < 0)
      return -1;
  return 0;
}

static void put_meta(struct store *s, const char *key, const void *val,
                     size_t len) {
  rocksdb_writebatch_put_cf(s->batch, s->cf[CF_DEFAULT], key, strlen(key), val,
                            len);
}

/* A metadata value as a malloc'ed string (NUL-terminated), NULL if absent
 * (*found = 0) or on error (-1 returned). */
static int get_meta(struct store *s, const char *key, char **out, size_t *len,
                    char *err, size_t errlen) {
  char *e = NULL;
  size_t n = 0;
  char *v =
      rocksdb_get_cf(s->db, s->ro, s->cf[CF_DEFAULT], key, strlen(key), &n, &e);
  if (e)
    return rerr(err, errlen, e, "read metadata", s->dir);
  *out = NULL;
  *len = 0;
  if (v) {
    *out = xmalloc(n + 1);
    memcpy(*out, v, n);
    (*out)[n] = 0;
    *len = n;
    rocksdb_free(v);
  }
  return 0;
}

/* ---- the TTL compaction filter ---------------------------------------- */

static unsigned char ttl_filter(void *st, int level, const char *key,
                                size_t klen, const char *val, size_t vlen,
                                char **nv, size_t *nvlen,
                                unsigned char *changed) {
  (void)level, (void)nv, (void)nvlen;
  *changed = 0;
  struct store *s = st;
  uint32_t table;
  uint64_t fid;
  if (keys_db_key_parse(key, klen, &table, &fid) < 0)
    return 0;
  const struct store_table *t = find_table(s, table);
  if (!t || !t->ttl_steps)
    return 0;
  struct row r;
  char e[8];
  if (row_peek(val, vlen, &r, e, sizeof(e)) < 0)
    return 0; /* keep a corrupt row: a read reports it */
  if (!is_expired(t, r.last_step, atomic_load(&s->max_step)))
    return 0;
  atomic_fetch_add(&s->expired, 1);
  return 1;
}

/* RocksDB calls the destructor unconditionally; the state is the store,
 * which frees itself. */
static void ttl_filter_destroy(void *st) {
  (void)st;
}

static const char *ttl_filter_name(void *st) {
  (void)st;
  return "maskps.ttl";
}

/* ---- open / close ----------------------------------------------------- */

void store_options_defaults(struct store_options *o) {
  memset(o, 0, sizeof(*o));
  o->memory_mb = 256;
  o->wal = STORE_WAL_ASYNC;
  sparse_opt_defaults(&o->dense, ROW_OPT_ADAM);
  o->create_if_missing = 1;
}

static int check_options(const char *dir, const struct store_options *o,
                         char *err, size_t errlen) {
  if (o->memory_mb < 4) {
    snprintf(err, errlen, "store %s: memory_mb = %zu, want >= 4", dir,
             o->memory_mb);
    return -1;
  }
  if (o->ntables > STORE_MAX_TABLES || (o->ntables && !o->tables)) {
    snprintf(err, errlen, "store %s: %zu tables (at most %d)", dir, o->ntables,
             STORE_MAX_TABLES);
    return -1;
  }
  if ((unsigned)o->wal > STORE_WAL_OFF) {
    snprintf(err, errlen, "store %s: unknown WAL policy %d", dir, (int)o->wal);
    return -1;
  }
  char e[200];
  for (size_t i = 0; i < o->ntables; i++) {
    const struct store_table *t = &o->tables[i];
    if (t->dim < 1 || t->dim > ROW_MAX_DIM) {
      snprintf(err, errlen, "store %s: table %u: dim %u not in 1..%d", dir,
               t->id, t->dim, ROW_MAX_DIM);
      return -1;
    }
    if (sparse_opt_validate(&t->opt, e, sizeof(e)) < 0) {
      snprintf(err, errlen, "store %s: table %u: %s", dir, t->id, e);
      return -1;
    }
    if (!(t->init_std >= 0 && isfinite(t->init_std))) {
      snprintf(err, errlen, "store %s: table %u: init_std %g", dir, t->id,
               t->init_std);
      return -1;
    }
    for (size_t j = 0; j < i; j++)
      if (o->tables[j].id == t->id) {
        snprintf(err, errlen, "store %s: table id %u given twice", dir, t->id);
        return -1;
      }
  }
  if (o->dense_size) {
    if (sparse_opt_validate(&o->dense, e, sizeof(e)) < 0) {
      snprintf(err, errlen, "store %s: dense: %s", dir, e);
      return -1;
    }
    if (o->dense_size > ((size_t)1 << 34)) {
      snprintf(err, errlen, "store %s: dense_size %zu too large", dir,
               o->dense_size);
      return -1;
    }
  }
  return 0;
}

/* Records each table's schema on first open; refuses a mismatch later. */
static int check_schema(struct store *s, char *err, size_t errlen) {
  char key[64], want[128], *have;
  size_t n;
  for (size_t i = 0; i < s->ntables; i++) {
    const struct store_table *t = &s->tables[i];
    snprintf(key, sizeof(key), "schema/%u", t->id);
    snprintf(want, sizeof(want), "dim=%u opt=%s amtl=%d", t->dim,
             row_opt_name(t->opt.kind), t->amtl ? 1 : 0);
    if (get_meta(s, key, &have, &n, err, errlen) < 0)
      return -1;
    if (!have) {
      put_meta(s, key, want, strlen(want));
      continue;
    }
    int same = strcmp(have, want) == 0;
    if (!same)
      snprintf(err, errlen,
               "store %s: table %u was created with %s, the options say %s; "
               "migrate it (maskps-table migrate) or use a new directory",
               s->dir, t->id, have, want);
    free(have);
    if (!same)
      return -1;
  }
  snprintf(key, sizeof(key), "dense_size");
  snprintf(want, sizeof(want), "%zu", s->dense_n);
  if (get_meta(s, key, &have, &n, err, errlen) < 0)
    return -1;
  /* A store without a dense shard ("0") may gain one; a size change is a
   * different model. */
  if (have && strcmp(have, want) != 0 && s->dense_n && strcmp(have, "0")) {
    snprintf(err, errlen,
             "store %s: dense shard was created with %s floats, the options "
             "say %s",
             s->dir, have, want);
    free(have);
    return -1;
  }
  if (!have || s->dense_n)
    put_meta(s, key, want, strlen(want));
  free(have);
  if (get_meta(s, "max_step", &have, &n, err, errlen) < 0)
    return -1;
  if (have && n == 8) {
    uint64_t v;
    memcpy(&v, have, 8);
    atomic_store(&s->max_step, v);
  }
  free(have);
  return 0;
}

static void dense_key(size_t chunk, uint8_t k[4]) {
  for (int i = 0; i < 4; i++)
    k[i] = (uint8_t)(chunk >> (24 - 8 * i));
}

static size_t chunk_len(const struct store *s, size_t c) {
  size_t off = c * STORE_DENSE_CHUNK;
  return s->dense_n - off < STORE_DENSE_CHUNK ? s->dense_n - off
                                              : STORE_DENSE_CHUNK;
}

static int dense_load(struct store *s, char *err, size_t errlen) {
  size_t nchunks = (s->dense_n + STORE_DENSE_CHUNK - 1) / STORE_DENSE_CHUNK;
  size_t found = 0;
  for (size_t c = 0; c < nchunks; c++) {
    uint8_t k[4];
    dense_key(c, k);
    char *e = NULL;
    size_t n = 0;
    char *v = rocksdb_get_cf(s->db, s->ro, s->cf[CF_DENSE], (const char *)k, 4,
                             &n, &e);
    if (e)
      return rerr(err, errlen, e, "read dense chunk", s->dir);
    if (!v)
      continue;
    size_t len = chunk_len(s, c);
    uint32_t hdr[3];
    if (n >= DENSE_HEADER)
      memcpy(hdr, v, DENSE_HEADER);
    if (n != DENSE_HEADER + 16 * len || hdr[0] != DENSE_MAGIC ||
        hdr[1] != DENSE_VERSION || hdr[2] != len) {
      snprintf(err, errlen,
               "store %s: dense chunk %zu is corrupt (%zu bytes, expected "
               "%zu)",
               s->dir, c, n, DENSE_HEADER + 16 * len);
      rocksdb_free(v);
      return -1;
    }
    size_t off = c * STORE_DENSE_CHUNK;
    const char *p = v + DENSE_HEADER;
    memcpy(s->dw + off, p, 4 * len);
    memcpy(s->dm + off, p + 4 * len, 4 * len);
    memcpy(s->dv + off, p + 8 * len, 4 * len);
    memcpy(s->dt + off, p + 12 * len, 4 * len);
    rocksdb_free(v);
    found++;
  }
  s->dense_loaded = found > 0;
  return 0;
}

/* Puts the dirty dense chunks into the pending batch. */
static void dense_stage(struct store *s) {
  size_t nchunks = (s->dense_n + STORE_DENSE_CHUNK - 1) / STORE_DENSE_CHUNK;
  uint8_t *buf = NULL;
  for (size_t c = 0; c < nchunks; c++) {
    if (!s->ddirty[c])
      continue;
    size_t len = chunk_len(s, c), off = c * STORE_DENSE_CHUNK;
    if (!buf)
      buf = xmalloc(DENSE_HEADER + 16 * (size_t)STORE_DENSE_CHUNK);
    uint32_t hdr[3] = {DENSE_MAGIC, DENSE_VERSION, (uint32_t)len};
    memcpy(buf, hdr, DENSE_HEADER);
    uint8_t *p = buf + DENSE_HEADER;
    memcpy(p, s->dw + off, 4 * len);
    memcpy(p + 4 * len, s->dm + off, 4 * len);
    memcpy(p + 8 * len, s->dv + off, 4 * len);
    memcpy(p + 12 * len, s->dt + off, 4 * len);
    uint8_t k[4];
    dense_key(c, k);
    rocksdb_writebatch_put_cf(s->batch, s->cf[CF_DENSE], (const char *)k, 4,
                              (const char *)buf, DENSE_HEADER + 16 * len);
    s->ddirty[c] = 0;
  }
  free(buf);
}

/* Destroys the handles that the store and the raw baseline both own (the
 * ones base_options makes, plus read/write options and the write batch),
 * in the order both used; NULL ones (a half-made open) are skipped. Call
 * after the database is closed. */
static void destroy_handles(rocksdb_options_t *dbopt,
                            rocksdb_block_based_table_options_t *bbto,
                            rocksdb_cache_t *cache, rocksdb_readoptions_t *ro,
                            rocksdb_writeoptions_t *wo,
                            rocksdb_writebatch_t *batch) {
  if (dbopt)
    rocksdb_options_destroy(dbopt);
  if (bbto)
    rocksdb_block_based_options_destroy(bbto);
  if (cache)
    rocksdb_cache_destroy(cache);
  if (ro)
    rocksdb_readoptions_destroy(ro);
  if (wo)
    rocksdb_writeoptions_destroy(wo);
  if (batch)
    rocksdb_writebatch_destroy(batch);
}

static void destroy(struct store *s) {
  if (s->db) {
    for (int i = 0; i < CF_COUNT_; i++)
      if (s->cf[i])
        rocksdb_column_family_handle_destroy(s->cf[i]);
    rocksdb_close(s->db);
  }
  if (s->ttl_filter)
    rocksdb_compactionfilter_destroy(s->ttl_filter);
  for (int i = 0; i < CF_COUNT_; i++)
    if (s->cfopt[i])
      rocksdb_options_destroy(s->cfopt[i]);
  destroy_handles(s->dbopt, s->bbto, s->block_cache, s->ro, s->wo, s->batch);
  cache_free(s->cache);
  free(s->dw);
  free(s->dm);
  free(s->dv);
  free(s->dt);
  free(s->ddirty);
  free(s->arena);
  free(s->work);
  free(s->enc);
  free(s->ld_off);
  free(s->ld_ptr);
  free(s->ld_len);
  free(s->ld_src);
  free(s->ld_hdr);
  free(s->ld_miss);
  free(s->ld_sorted);
  free(s->tables);
  free(s->lr0);
  free(s->dir);
  free(s);
}

/* The RocksDB options shared by the store and the benchmark's raw
 * baseline (store_raw_open), so that both run with the same settings: an
 * LRU block cache of block_cache bytes that also holds index and filter
 * blocks, Bloom filters, and memtables bounded by db_write_buffer_size. */
static void base_options(size_t block_cache, size_t memtables, int create,
                         rocksdb_cache_t **cache,
                         rocksdb_block_based_table_options_t **bbto,
                         rocksdb_options_t **dbopt) {
  *cache = rocksdb_cache_create_lru(block_cache);
  *bbto = rocksdb_block_based_options_create();
  rocksdb_block_based_options_set_block_cache(*bbto, *cache);
  rocksdb_block_based_options_set_cache_index_and_filter_blocks(*bbto, 1);
  /* Most pulls of a growing table ask for keys that are not stored yet: a
   * Bloom filter answers those without reading a data block. */
  rocksdb_block_based_options_set_filter_policy(
      *bbto, rocksdb_filterpolicy_create_bloom_full(10));
  *dbopt = rocksdb_options_create();
  rocksdb_options_set_create_if_missing(*dbopt, create);
  rocksdb_options_set_create_missing_column_families(*dbopt, 1);
  rocksdb_options_increase_parallelism(*dbopt, 2);
  rocksdb_options_set_db_write_buffer_size(*dbopt, memtables);
  /* RocksDB's own LOG file lives on the same disk as the data. Debian's
   * librocksdb 7.8 is built with assertions, and its file writer asserts
   * when a write follows a failed one: on a full disk, the first LOG line
   * that hits ENOSPC and the next one (the error handler logs "Set regular
   * background error" at INFO) aborted the process 1 run in 15-40
   * (tests/pserver/test_store_full). At FATAL only the header is written at
   * open, so the LOG never meets a full disk. What is lost is RocksDB's
   * INFO chatter; every error still reaches our own log through the
   * status each call returns, and the stall and compaction figures through
   * STATS. */
  rocksdb_options_set_info_log_level(*dbopt, 4 /* FATAL_LEVEL */);
}

static struct store *store_open_impl(const char *dir,
                                     const struct store_options *o, char *err,
                                     size_t errlen) {
  if (check_options(dir, o, err, errlen) < 0)
    return NULL;
  struct stat st;
  if (stat(dir, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      snprintf(err, errlen,
               "store %s: exists and is not a directory; give a directory "
               "path for the shard's RocksDB",
               dir);
      return NULL;
    }
  } else if (errno != ENOENT) {
    snprintf(err, errlen, "store %s: cannot use the path: %s", dir,
             strerror(errno));
    return NULL;
  } else if (!o->create_if_missing) {
    snprintf(err, errlen, "store %s: no such store (create_if_missing off)",
             dir);
    return NULL;
  }

  struct store *s = xcalloc(1, sizeof(*s));
  s->dir = xstrdup(dir);
  s->ntables = o->ntables;
  s->tables = xmalloc((o->ntables ? o->ntables : 1) * sizeof(*s->tables));
  if (o->ntables)
    memcpy(s->tables, o->tables, o->ntables * sizeof(*s->tables));
  qsort(s->tables, s->ntables, sizeof(*s->tables), cmp_table);
  s->wal = o->wal;

  /* The memory split documented in store.h. */
  const size_t total = o->memory_mb << 20;
  const size_t row_cache = total / 2, memtables = total / 4;
  s->block_cache_budget = total / 4;

  base_options(s->block_cache_budget, memtables, o->create_if_missing != 0,
               &s->block_cache, &s->bbto, &s->dbopt);
  s->ttl_filter = rocksdb_compactionfilter_create(s, ttl_filter_destroy,
                                                  ttl_filter, ttl_filter_name);
  for (int i = 0; i < CF_COUNT_; i++) {
    s->cfopt[i] = rocksdb_options_create_copy(s->dbopt);
    rocksdb_options_set_block_based_table_factory(s->cfopt[i], s->bbto);
    rocksdb_options_set_write_buffer_size(
        s->cfopt[i], i == CF_ROWS ? memtables / 2 : memtables / 8);
    rocksdb_options_set_max_write_buffer_number(s->cfopt[i], 2);
  }
  rocksdb_options_set_compaction_filter(s->cfopt[CF_ROWS], s->ttl_filter);

  char *e = NULL;
  s->read_only = o->read_only != 0;
  s->warm_get = o->warm_get;
  s->warm_ctx = o->warm_ctx;
  if (s->read_only)
    s->db = rocksdb_open_for_read_only_column_families(
        s->dbopt, dir, CF_COUNT_, cf_names,
        (const rocksdb_options_t *const *)s->cfopt, s->cf, 0, &e);
  else
    s->db = rocksdb_open_column_families(
        s->dbopt, dir, CF_COUNT_, cf_names,
        (const rocksdb_options_t *const *)s->cfopt, s->cf, &e);
  if (e || !s->db) {
    rerr(err, errlen, e, "cannot open RocksDB", dir);
    s->db = NULL;
    memset(s->cf, 0, sizeof(s->cf));
    destroy(s);
    return NULL;
  }
  s->ro = rocksdb_readoptions_create();
  s->wo = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(s->wo, o->wal == STORE_WAL_SYNC);
  rocksdb_writeoptions_disable_WAL(s->wo, o->wal == STORE_WAL_OFF);
  s->batch = rocksdb_writebatch_create();
  s->cache = cache_new(row_cache, writeback, s);
  s->work = xmalloc(sizeof(float) * 6 * ROW_MAX_DIM);
  s->enc = xmalloc(row_size(ROW_MAX_DIM, ROW_OPT_ADAM));

  s->dense_n = o->dense_size;
  s->dopt = o->dense;
  s->dlr0 = s->dopt.lr;
  s->lr0 = xcalloc(s->ntables ? s->ntables : 1, sizeof(float));
  for (size_t i = 0; i < s->ntables; i++)
    s->lr0[i] = s->tables[i].opt.lr;
  if (s->dense_n) {
    s->dw = xcalloc(s->dense_n, sizeof(float));
    s->dm = xcalloc(s->dense_n, sizeof(float));
    s->dv = xcalloc(s->dense_n, sizeof(float));
    s->dt = xcalloc(s->dense_n, sizeof(uint32_t));
    s->ddirty =
        xcalloc((s->dense_n + STORE_DENSE_CHUNK - 1) / STORE_DENSE_CHUNK, 1);
  }

  /* The schema is written with a synced WAL whatever the policy: it must
   * never be lost while rows written under it survive. */
  rocksdb_writeoptions_t *wsync = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(wsync, 1);
  int rc = check_schema(s, err, errlen);
  if (rc == 0 && s->dense_n)
    rc = dense_load(s, err, errlen);
  if (s->read_only) /* the schema was checked; record nothing */
    rocksdb_writebatch_clear(s->batch);
  if (rc == 0 && rocksdb_writebatch_count(s->batch)) {
    rocksdb_write(s->db, wsync, s->batch, &e);
    rocksdb_writebatch_clear(s->batch);
    if (e)
      rc = rerr(err, errlen, e, "write metadata", dir);
  }
  rocksdb_writeoptions_destroy(wsync);
  if (rc < 0) {
    destroy(s);
    return NULL;
  }
  return s;
}

/* Writes back everything the store holds in memory and makes it durable:
 * dirty rows, dense chunks, the TTL clock; then flushes the memtables (with
 * the WAL off, only SST files survive a crash). */
int store_flush(struct store *s, char *err, size_t errlen) {
  if (s->read_only) /* nothing can be dirty: pushes are refused */
    return 0;
  if (writeback_all(s, err, errlen) < 0)
    return -1;
  if (s->dense_n)
    dense_stage(s);
  uint64_t ms = atomic_load(&s->max_step);
  put_meta(s, "max_step", &ms, sizeof(ms));
  if (commit(s, err, errlen) < 0)
    return -1;
  rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
  rocksdb_flushoptions_set_wait(fo, 1);
  char *e = NULL;
  for (int i = 0; i < CF_COUNT_ && !e; i++)
    rocksdb_flush_cf(s->db, fo, s->cf[i], &e);
  rocksdb_flushoptions_destroy(fo);
  if (e)
    return rerr(err, errlen, e, "flush memtables", s->dir);
  return 0;
}

int store_close(struct store *s, char *err, size_t errlen) {
  if (!s)
    return 0;
  int rc = store_flush(s, err, errlen);
  void (*wf)(void *) = s->warm_free;
  void *wc = s->warm_ctx;
  destroy(s);
  if (wf) /* the store owned the warm-start context (store_open) */
    wf(wc);
  return rc;
}

/* ---- loading the rows of one operation -------------------------------- */

struct loaded {
  size_t *off;     /* [n] arena offset of key i's bytes (copied rows) */
  const uint8_t **ptr; /* [n] key i's bytes: in the arena, or in the cache
                          for an uncopied cached row (valid until the next
                          cache_put) */
  uint32_t *len;   /* [n] length; 0 if absent */
  uint8_t *src;    /* [n] SRC_* */
  struct row *hdr; /* [n] peeked header (values/state unset) */
};

/* The arrays belong to the store (reused by the next operation). */
static void loaded_free(struct loaded *l) {
  (void)l;
}

/* Makes the store's per-operation key arrays hold n entries. */
static void scratch_reserve(struct store *s, size_t n) {
  if (n <= s->ld_cap)
    return;
  size_t cap = s->ld_cap ? s->ld_cap : 1024;
  while (cap < n)
    cap *= 2;
  s->ld_off = xrealloc(s->ld_off, cap * sizeof(size_t));
  s->ld_ptr = xrealloc(s->ld_ptr, cap * sizeof(*s->ld_ptr));
  s->ld_len = xrealloc(s->ld_len, cap * sizeof(uint32_t));
  s->ld_src = xrealloc(s->ld_src, cap);
  s->ld_hdr = xrealloc(s->ld_hdr, cap * sizeof(struct row));
  s->ld_miss = xrealloc(s->ld_miss, cap * sizeof(size_t));
  s->ld_sorted = xrealloc(s->ld_sorted, cap * sizeof(uint64_t));
  s->ld_cap = cap;
}

static size_t arena_add(struct store *s, const void *p, size_t n) {
  if (s->arena_len + n > s->arena_cap) {
    size_t cap = s->arena_cap ? s->arena_cap : 1 << 16;
    while (cap < s->arena_len + n)
      cap *= 2;
    s->arena = xrealloc(s->arena, cap);
    s->arena_cap = cap;
  }
  size_t off = s->arena_len;
  memcpy(s->arena + off, p, n);
  s->arena_len += n;
  return off;
}

/* Finds the current bytes of n keys (cache first, then batched MultiGets
 * for the misses) and validates each against the table: a corrupt row
 * fails the whole operation. Rows from RocksDB are copied into the arena;
 * cached rows too if copy_cached (a push, whose cache_puts may evict rows
 * it has not read yet), else l->ptr points into the cache (a pull, which
 * reads them all before its first cache_put). Expired rows are marked
 * SRC_EXPIRED and read as absent. */
static int load(struct store *s, const struct store_table *t, size_t n,
                const uint64_t *keys, int copy_cached, struct loaded *l,
                char *err, size_t errlen) {
  scratch_reserve(s, n ? n : 1);
  l->off = s->ld_off;
  l->ptr = s->ld_ptr;
  l->len = s->ld_len;
  l->src = s->ld_src;
  l->hdr = s->ld_hdr;
  memset(l->off, 0, n * sizeof(size_t));
  memset(l->len, 0, n * sizeof(uint32_t));
  memset(l->src, 0, n);
  memset(l->hdr, 0, n * sizeof(struct row));
  s->arena_len = 0;
  size_t nmiss = 0;
  size_t *miss = s->ld_miss;
  for (size_t i = 0; i < n; i++) {
    size_t len;
    /* Memory latency, not arithmetic, bounds a cached pull+push: start
     * loading the slot of the key 16 ahead and the row bytes of the key 8
     * ahead (whose slot is in the CPU cache by now). */
    if (i + 16 < n)
      cache_prefetch(s->cache, t->id, keys[i + 16], 0);
    if (i + 8 < n)
      cache_prefetch(s->cache, t->id, keys[i + 8], 1);
    const void *p = cache_get(s->cache, t->id, keys[i], &len);
    l->ptr[i] = NULL;
    if (p) {
      if (copy_cached)
        l->off[i] = arena_add(s, p, len);
      else
        l->ptr[i] = p;
      l->len[i] = (uint32_t)len;
      l->src[i] = SRC_CACHE;
    } else {
      miss[nmiss++] = i;
    }
  }
  int rc = 0;
  if (nmiss) {
    /* MultiGet in chunks: every value a MultiGet returns pins its data
     * block in the block cache until the value is released, so one call
     * for a whole 4096-key push could pin 4096 blocks (16 MB of 4 KB
     * blocks) beyond the block cache's budget. A chunk bounds that to
     * LOAD_CHUNK blocks and keeps most of the batching gain. */
    const size_t cn = nmiss < LOAD_CHUNK ? nmiss : LOAD_CHUNK;
    uint8_t *kb = xmalloc(cn * KEYS_DB_KEY_LEN);
    const char **kp = xmalloc(cn * sizeof(char *));
    size_t *ks = xmalloc(cn * sizeof(size_t));
    rocksdb_pinnableslice_t **vals = xcalloc(cn, sizeof(*vals));
    char **errs = xcalloc(cn, sizeof(char *));
    for (size_t c0 = 0; c0 < nmiss; c0 += cn) {
      const size_t c1 = nmiss - c0 < cn ? nmiss : c0 + cn;
      for (size_t m = c0; m < c1; m++) {
        keys_db_key(t->id, keys[miss[m]], kb + (m - c0) * KEYS_DB_KEY_LEN);
        kp[m - c0] = (const char *)kb + (m - c0) * KEYS_DB_KEY_LEN;
        ks[m - c0] = KEYS_DB_KEY_LEN;
      }
      rocksdb_batched_multi_get_cf(s->db, s->ro, s->cf[CF_ROWS], c1 - c0, kp,
                                   ks, vals, errs, false);
      for (size_t m = c0; m < c1; m++) {
        size_t i = miss[m], x = m - c0;
        if (errs[x]) {
          if (rc == 0 && strncmp(errs[x], "NotFound", 8) != 0) {
            char what[96];
            snprintf(what, sizeof(what), "read table %u key 0x%016" PRIx64,
                     t->id, keys[i]);
            rerr(err, errlen, errs[x], what, s->dir);
            errs[x] = NULL;
            rc = -1;
          }
          rocksdb_free(errs[x]);
          errs[x] = NULL;
        }
        if (vals[x]) {
          size_t len = 0;
          const char *v = rocksdb_pinnableslice_value(vals[x], &len);
          if (v && rc == 0) {
            l->off[i] = arena_add(s, v, len);
            l->len[i] = (uint32_t)len;
            l->src[i] = SRC_DB;
          }
          rocksdb_pinnableslice_destroy(vals[x]);
          vals[x] = NULL;
        }
      }
    }
    free(kb);
    free(kp);
    free(ks);
    free(vals);
    free(errs);
  }
  /* Warm start: ask the old tables for keys this store never held, and
   * copy what they have forward (into this operation's write batch). */
  for (size_t m = 0; rc == 0 && s->warm_get && m < nmiss; m++) {
    size_t i = miss[m], len = 0;
    if (l->src[i] != SRC_NONE)
      continue;
    int got = s->warm_get(s->warm_ctx, t, keys[i], s->enc,
                          row_size(ROW_MAX_DIM, ROW_OPT_ADAM), &len, err,
                          errlen);
    if (got < 0)
      rc = -1;
    else if (got == 1) {
      writeback(s, t->id, keys[i], s->enc, len);
      l->off[i] = arena_add(s, s->enc, len);
      l->len[i] = (uint32_t)len;
      l->src[i] = SRC_DB;
    }
  }
  if (rc < 0)
    return -1;
  const uint64_t now = atomic_load(&s->max_step);
  for (size_t i = 0; i < n; i++) {
    if (l->src[i] == SRC_NONE)
      continue;
    struct row *r = &l->hdr[i];
    char e[160];
    if (!l->ptr[i]) /* the arena no longer moves */
      l->ptr[i] = s->arena + l->off[i];
    if (row_peek(l->ptr[i], l->len[i], r, e, sizeof(e)) < 0) {
      snprintf(err, errlen, "store %s: table %u key 0x%016" PRIx64 ": %s",
               s->dir, t->id, keys[i], e);
      return -1;
    }
    if (r->opt != t->opt.kind || r->p > t->dim ||
        (!t->amtl && r->p != 0 && r->p != t->dim)) {
      snprintf(err, errlen,
               "store %s: table %u key 0x%016" PRIx64
               ": stored row has opt=%s p=%u, table has opt=%s dim=%u%s",
               s->dir, t->id, keys[i], row_opt_name((enum row_opt)r->opt), r->p,
               row_opt_name(t->opt.kind), t->dim, t->amtl ? "" : " (no amtl)");
      return -1;
    }
    if (is_expired(t, r->last_step, now)) {
      l->src[i] = SRC_EXPIRED;
      l->len[i] = 0;
    }
  }
  return 0;
}

static const struct store_table *
table_or_err(const struct store *s, uint32_t table, char *err, size_t errlen) {
  const struct store_table *t = find_table(s, table);
  if (!t)
    snprintf(err, errlen, "store %s: unknown table %u", s->dir, table);
  return t;
}

/* Gives free heap pages back to the kernel at most once a second. Rows
 * evicted from the row cache leave 240-byte holes between RocksDB's blocks
 * and memtable arenas in glibc's heap; without this the freed but
 * fragmented pages stay resident and RSS ends ~30% above memory_mb with
 * a table larger than the budget (bench_store). malloc_trim releases every
 * whole free page, not just the heap's top. */
static void trim_heap(struct store *s) {
#ifdef __GLIBC__
  const uint64_t now = clock_ns();
  if (now - s->last_trim_ns < 1000000000ull)
    return;
  malloc_trim(0);
  s->last_trim_ns = clock_ns();
#else
  (void)s;
#endif
}

/* ---- pull ------------------------------------------------------------- */

long store_pull(struct store *s, uint32_t table, size_t n, const uint64_t *keys,
                const struct store_pull_out *out, char *err, size_t errlen) {
  const struct store_table *t = table_or_err(s, table, err, errlen);
  if (!t)
    return -1;
  struct loaded l;
  if (load(s, t, n, keys, 0, &l, err, errlen) < 0) {
    loaded_free(&l);
    return -1;
  }
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    const struct row *r = &l.hdr[i];
    float *v = out->values + pos;
    uint8_t flags = 0;
    int have = l.src[i] == SRC_CACHE || l.src[i] == SRC_DB;
    if (have && r->p > 0) {
      memcpy(v, row_values_ptr(l.ptr[i]), 4 * (size_t)r->p);
      out->p[i] = r->p;
    } else {
      out->p[i] = (uint16_t)t->dim;
      if (!have && admits_at_once(t)) {
        init_values(t, keys[i], v, 0, t->dim);
      } else {
        memset(v, 0, 4 * (size_t)t->dim);
        flags |= STORE_PULL_PENDING;
      }
    }
    out->count[i] = have ? r->count : 0;
    out->clicks[i] = have ? r->clicks : 0;
    if (out->flags)
      out->flags[i] = flags;
    pos += out->p[i];
  }
  /* Rows read from disk become hot; may evict (and write back) others. */
  for (size_t i = 0; i < n; i++)
    if (l.src[i] == SRC_DB)
      cache_put(s->cache, t->id, keys[i], l.ptr[i], l.len[i], 0);
  loaded_free(&l);
  if (commit(s, err, errlen) < 0)
    return -1;
  trim_heap(s);
  return (long)pos;
}

/* ---- push ------------------------------------------------------------- */

/* Changes r's stored prefix to k: the state is slot-major with stride p, so
 * it is re-laid with stride k; a grown tail gets the deterministic init and
 * fresh optimizer state. */
static void resize_row(const struct store_table *t, uint64_t fid, struct row *r,
                       unsigned k, float *tmp) {
  const unsigned p = r->p, slots = row_slots(t->opt.kind);
  if (k == p)
    return;
  const unsigned keep = p < k ? p : k;
  for (unsigned sl = 0; sl < slots; sl++)
    for (unsigned j = 0; j < keep; j++)
      tmp[sl * k + j] = r->state[sl * p + j];
  if (k > p) {
    sparse_opt_init_state(&t->opt, tmp, k, p, k);
    init_values(t, fid, r->values, p, k);
  }
  memcpy(r->state, tmp, sizeof(float) * slots * k);
  r->p = (uint16_t)k;
}

/* A fresh admitted row of full length D in r (buffers from s->work). */
static void fresh_row(const struct store_table *t, uint64_t fid, struct row *r,
                      uint64_t step) {
  r->flags = 0;
  r->p = (uint16_t)t->dim;
  r->opt_step = 0;
  r->last_step = step;
  init_values(t, fid, r->values, 0, t->dim);
  sparse_opt_init_state(&t->opt, r->state, t->dim, 0, t->dim);
}

static uint32_t sat_add(uint32_t a, uint32_t b) {
  return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

static int check_push_args(struct store *s, const struct store_table *t,
                           size_t n, const uint64_t *keys, const uint16_t *gp,
                           const uint16_t *new_p, char *err, size_t errlen) {
  if (new_p && !t->amtl) {
    snprintf(err, errlen,
             "store %s: table %u: a push carries prefix lengths but the "
             "table is not amtl",
             s->dir, t->id);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (gp && gp[i] > t->dim) {
      snprintf(err, errlen,
               "store %s: table %u key 0x%016" PRIx64
               ": gradient of %u floats exceeds dim %u",
               s->dir, t->id, keys[i], gp[i], t->dim);
      return -1;
    }
    if (new_p && (new_p[i] < 1 || new_p[i] > t->dim)) {
      snprintf(err, errlen,
               "store %s: table %u key 0x%016" PRIx64
               ": prefix length %u not in 1..%u",
               s->dir, t->id, keys[i], new_p[i], t->dim);
      return -1;
    }
  }
  /* Duplicates by an open-addressing set of key indices (a quarter to a
   * half full): linear time, where sorting 4096 keys per push cost ~6% of
   * a cached pull+push. */
  scratch_reserve(s, n ? n : 1);
  uint32_t *set = (uint32_t *)(void *)s->ld_sorted; /* 2 * ld_cap slots */
  const size_t mask = 2 * s->ld_cap - 1;
  memset(set, 0, (mask + 1) * sizeof(uint32_t));
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    for (size_t h = keys_mix64(keys[i]) & mask;; h = (h + 1) & mask) {
      if (!set[h]) {
        set[h] = (uint32_t)i + 1;
        break;
      }
      if (keys[set[h] - 1] == keys[i]) {
        snprintf(err, errlen,
                 "store %s: table %u: key 0x%016" PRIx64
                 " appears twice in one push (sum its gradients first)",
                 s->dir, t->id, keys[i]);
        rc = -1;
        break;
      }
    }
  }
  return rc;
}

int store_push(struct store *s, uint32_t table, size_t n, const uint64_t *keys,
               const uint16_t *gp, const float *grads, const uint16_t *new_p,
               const uint32_t *counts, const uint32_t *clicks, uint64_t step,
               char *err, size_t errlen) {
  const struct store_table *t = table_or_err(s, table, err, errlen);
  if (!t)
    return -1;
  if (check_push_args(s, t, n, keys, gp, new_p, err, errlen) < 0)
    return -1;
  if (s->read_only) {
    snprintf(err, errlen, "store %s: opened read-only; push refused", s->dir);
    return -1;
  }
  note_step(s, step);
  struct loaded l;
  if (load(s, t, n, keys, 1, &l, err, errlen) < 0) {
    loaded_free(&l);
    return -1;
  }
  const unsigned D = t->dim;
  float *values = s->work, *state = s->work + ROW_MAX_DIM,
        *tmp = s->work + 3 * ROW_MAX_DIM, *g = s->work + 5 * ROW_MAX_DIM;
  const int through = s->wal != STORE_WAL_OFF;
  size_t goff = 0;
  for (size_t i = 0; i < n; i++) {
    const unsigned gn = gp ? gp[i] : D;
    const float *gi = grads + goff;
    goff += gn;
    struct row r = l.hdr[i];
    r.values = values;
    r.state = state;
    int admitted_before;
    if (l.len[i] == 0) { /* unseen or expired */
      memset(&r, 0, sizeof(r));
      r.values = values;
      r.state = state;
      r.opt = (uint8_t)t->opt.kind;
      if (admits_at_once(t)) {
        fresh_row(t, keys[i], &r, step);
        s->admitted++;
        admitted_before = 1; /* its pull read the init values */
      } else {
        r.flags = ROW_F_PENDING;
        admitted_before = 0;
      }
    } else {
      char e[8];
      CHECK(row_decode(l.ptr[i], l.len[i], &r, e, sizeof(e)) == 0,
            "row validated in load()");
      admitted_before = r.p > 0;
    }
    r.count = sat_add(r.count, counts ? counts[i] : 1);
    r.clicks = sat_add(r.clicks, clicks ? clicks[i] : 0);
    if (!admitted_before) {
      if (step > r.last_step)
        r.last_step = step;
      if (r.count >= t->min_count) {
        fresh_row(t, keys[i], &r, step);
        s->admitted++;
      }
    } else {
      unsigned use = gn < r.p ? gn : r.p;
      memcpy(g, gi, sizeof(float) * use);
      memset(g + use, 0, sizeof(float) * (r.p - use));
      sparse_opt_apply(&t->opt, &r, g, step);
    }
    if (new_p && r.p > 0) {
      unsigned k = new_p[i];
      if (k > r.p || step >= t->amtl_warmup_steps)
        resize_row(t, keys[i], &r, k, tmp);
    }
    size_t len = row_encode(&r, s->enc, row_size(ROW_MAX_DIM, ROW_OPT_ADAM));
    CHECK(len > 0, "encode p=%u", r.p);
    if (through) {
      writeback(s, t->id, keys[i], s->enc, len);
      cache_put(s->cache, t->id, keys[i], s->enc, len, 0);
    } else if (!cache_put(s->cache, t->id, keys[i], s->enc, len, 1)) {
      writeback(s, t->id, keys[i], s->enc, len);
    }
  }
  loaded_free(&l);
  if (commit(s, err, errlen) < 0) {
    /* Nothing of this push reached RocksDB: drop the cached new rows so
     * that reads see the old ones again (write-through modes). */
    if (through)
      for (size_t i = 0; i < n; i++)
        cache_remove(s->cache, t->id, keys[i]);
    return -1;
  }
  trim_heap(s);
  return 0;
}

/* ---- checkpoint, compaction, debug ------------------------------------ */

int store_checkpoint(struct store *s, const char *dir, char *err,
                     size_t errlen) {
  struct stat st;
  if (stat(dir, &st) == 0 || errno != ENOENT) {
    snprintf(err, errlen,
             "store %s: checkpoint directory %s already exists (or cannot be "
             "checked); a checkpoint never overwrites: choose a new path",
             s->dir, dir);
    return -1;
  }
  if (store_flush(s, err, errlen) < 0)
    return -1;
  char *e = NULL;
  rocksdb_checkpoint_t *ck = rocksdb_checkpoint_object_create(s->db, &e);
  if (e)
    return rerr(err, errlen, e, "create checkpoint object", s->dir);
  rocksdb_checkpoint_create(ck, dir, 0, &e);
  rocksdb_checkpoint_object_destroy(ck);
  if (e) {
    char what[256];
    snprintf(what, sizeof(what), "checkpoint into %s", dir);
    return rerr(err, errlen, e, what, s->dir);
  }
  return 0;
}

int store_compact(struct store *s, char *err, size_t errlen) {
  if (writeback_all(s, err, errlen) < 0)
    return -1;
  rocksdb_compact_range_cf(s->db, s->cf[CF_ROWS], NULL, 0, NULL, 0);
  return 0;
}

int store_debug_put_raw(struct store *s, uint32_t table, uint64_t fid,
                        const void *value, size_t len, char *err,
                        size_t errlen) {
  cache_remove(s->cache, table, fid);
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(table, fid, k);
  char *e = NULL;
  rocksdb_put_cf(s->db, s->wo, s->cf[CF_ROWS], (const char *)k, sizeof(k),
                 value, len, &e);
  if (e)
    return rerr(err, errlen, e, "debug put", s->dir);
  return 0;
}

/* ---- dense ------------------------------------------------------------ */

/* 0 if [off, off + len) lies inside the shard's dense floats, else -1
 * with the message in err. */
static int dense_check(const struct store *s, size_t off, size_t len, char *err,
                       size_t errlen) {
  if (len > s->dense_n || off > s->dense_n - len) {
    snprintf(err, errlen,
             "store %s: dense range [%zu, %zu + %zu) outside the shard's %zu "
             "floats",
             s->dir, off, off, len, s->dense_n);
    return -1;
  }
  return 0;
}

/* dense_check, then marks the chunks the range touches dirty (it is
 * about to be written). */
static int dense_range(struct store *s, size_t off, size_t len, char *err,
                       size_t errlen) {
  if (dense_check(s, off, len, err, errlen) < 0)
    return -1;
  if (len)
    memset(s->ddirty + off / STORE_DENSE_CHUNK, 1,
           (off + len - 1) / STORE_DENSE_CHUNK - off / STORE_DENSE_CHUNK + 1);
  return 0;
}

int store_dense_set(struct store *s, size_t off, size_t len,
                    const float *values, char *err, size_t errlen) {
  if (dense_range(s, off, len, err, errlen) < 0)
    return -1;
  memcpy(s->dw + off, values, sizeof(float) * len);
  memset(s->dm + off, 0, sizeof(float) * len);
  memset(s->dv + off, 0, sizeof(float) * len);
  memset(s->dt + off, 0, sizeof(uint32_t) * len);
  return 0;
}

int store_dense_push(struct store *s, size_t off, size_t len,
                     const float *grads, char *err, size_t errlen) {
  if (dense_range(s, off, len, err, errlen) < 0)
    return -1;
  sparse_opt_adam_dense(&s->dopt, s->dw + off, s->dm + off, s->dv + off,
                        s->dt + off, grads, len);
  return 0;
}

int store_dense_pull(struct store *s, size_t off, size_t len, float *out,
                     char *err, size_t errlen) {
  if (dense_check(s, off, len, err, errlen) < 0)
    return -1;
  memcpy(out, s->dw + off, sizeof(float) * len);
  return 0;
}

int store_dense_loaded(const struct store *s) {
  return s->dense_loaded;
}

int store_set_lr_scale(struct store *s, float scale, char *err,
                       size_t errlen) {
  if (!(scale > 0) || !isfinite(scale)) {
    snprintf(err, errlen, "store %s: learning-rate scale %g (expected > 0)",
             s->dir, (double)scale);
    return -1;
  }
  for (size_t i = 0; i < s->ntables; i++)
    s->tables[i].opt.lr = s->lr0[i] * scale;
  s->dopt.lr = s->dlr0 * scale;
  return 0;
}

/* ---- stats and iteration ---------------------------------------------- */

static uint64_t prop_sum(struct store *s, const char *name) {
  uint64_t sum = 0;
  for (int i = 0; i < CF_COUNT_; i++) {
    uint64_t v = 0;
    if (rocksdb_property_int_cf(s->db, s->cf[i], name, &v) == 0)
      sum += v;
  }
  return sum;
}

int store_stats(struct store *s, struct store_stats *o, char *err,
                size_t errlen) {
  (void)err, (void)errlen;
  memset(o, 0, sizeof(*o));
  rocksdb_property_int_cf(s->db, s->cf[CF_ROWS], "rocksdb.estimate-num-keys",
                          &o->rows_estimate);
  o->sst_bytes = prop_sum(s, "rocksdb.total-sst-files-size");
  o->live_bytes = prop_sum(s, "rocksdb.estimate-live-data-size");
  o->memtable_bytes = prop_sum(s, "rocksdb.cur-size-all-mem-tables");
  o->pending_compaction_bytes =
      prop_sum(s, "rocksdb.estimate-pending-compaction-bytes");
  rocksdb_property_int(s->db, "rocksdb.is-write-stopped", &o->write_stopped);
  rocksdb_property_int(s->db, "rocksdb.actual-delayed-write-rate",
                       &o->delayed_write_rate);
  o->block_cache_bytes = rocksdb_cache_get_usage(s->block_cache);
  o->block_cache_budget = s->block_cache_budget;
  struct cache_stats cs;
  cache_get_stats(s->cache, &cs);
  o->row_cache_bytes = cs.bytes;
  o->row_cache_budget = cs.budget;
  o->row_cache_rows = cs.rows;
  o->row_cache_hits = cs.hits;
  o->row_cache_misses = cs.misses;
  o->row_cache_hit_rate = cs.hits + cs.misses
                              ? (double)cs.hits / (double)(cs.hits + cs.misses)
                              : 0.0;
  o->expired = atomic_load(&s->expired);
  o->admitted = s->admitted;
  o->max_step = atomic_load(&s->max_step);
  return 0;
}

struct store_iter {
  struct store *s;
  const struct store_table *t;
  rocksdb_iterator_t *it;
  rocksdb_readoptions_t *ro;
  int started;
  float *values, *state;
};

struct store_iter *store_iter_new(struct store *s, uint32_t table, char *err,
                                  size_t errlen) {
  const struct store_table *t = table_or_err(s, table, err, errlen);
  if (!t)
    return NULL;
  if (writeback_all(s, err, errlen) < 0)
    return NULL;
  struct store_iter *it = xcalloc(1, sizeof(*it));
  it->s = s;
  it->t = t;
  /* A scan reads every block once: large readahead (fewer, larger
   * reads), and no block-cache churn evicting the hot blocks. */
  it->ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_fill_cache(it->ro, 0);
  rocksdb_readoptions_set_readahead_size(it->ro, 2u << 20);
  it->it = rocksdb_create_iterator_cf(s->db, it->ro, s->cf[CF_ROWS]);
  it->values = xmalloc(sizeof(float) * t->dim);
  it->state = xmalloc(sizeof(float) * (2 * t->dim + 1));
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(t->id, 0, k);
  rocksdb_iter_seek(it->it, (const char *)k, sizeof(k));
  return it;
}

int store_iter_next(struct store_iter *it, uint64_t *fid, struct row *r,
                    char *err, size_t errlen) {
  if (it->started)
    rocksdb_iter_next(it->it);
  it->started = 1;
  if (!rocksdb_iter_valid(it->it)) {
    char *e = NULL;
    rocksdb_iter_get_error(it->it, &e);
    if (e)
      return rerr(err, errlen, e, "iterate", it->s->dir);
    return 0;
  }
  size_t klen, vlen;
  const char *k = rocksdb_iter_key(it->it, &klen);
  uint32_t table;
  if (keys_db_key_parse(k, klen, &table, fid) < 0 || table != it->t->id)
    return 0; /* past the table's range */
  const char *v = rocksdb_iter_value(it->it, &vlen);
  struct row hdr;
  char e[160];
  if (row_peek(v, vlen, &hdr, e, sizeof(e)) < 0 || hdr.p > it->t->dim ||
      hdr.opt != it->t->opt.kind) {
    snprintf(err, errlen, "store %s: table %u key 0x%016" PRIx64 ": %s",
             it->s->dir, it->t->id, *fid,
             hdr.p > it->t->dim ? "prefix longer than dim" : e);
    return -1;
  }
  r->values = it->values;
  r->state = it->state;
  CHECK(row_decode(v, vlen, r, e, sizeof(e)) == 0, "peeked row");
  return 1;
}

void store_iter_free(struct store_iter *it) {
  if (!it)
    return;
  rocksdb_iter_destroy(it->it);
  rocksdb_readoptions_destroy(it->ro);
  free(it->values);
  free(it->state);
  free(it);
}

int store_table_scan(struct store *s, uint32_t table,
                     struct store_table_stats *out, uint64_t *hist, char *err,
                     size_t errlen) {
  struct store_iter *it = store_iter_new(s, table, err, errlen);
  if (!it)
    return -1;
  memset(out, 0, sizeof(*out));
  memset(hist, 0, sizeof(uint64_t) * (it->t->dim + 1));
  uint64_t fid, psum = 0;
  struct row r;
  int rc;
  while ((rc = store_iter_next(it, &fid, &r, err, errlen)) == 1) {
    out->rows++;
    out->pending += r.p == 0;
    out->value_bytes += row_size(r.p, (enum row_opt)r.opt);
    psum += r.p;
    hist[r.p]++;
  }
  if (out->rows > out->pending)
    out->mean_p = (double)psum / (double)(out->rows - out->pending);
  store_iter_free(it);
  return rc < 0 ? -1 : 0;
}

/* ---- benchmark-only: the raw RocksDB baseline ------------------------- */

struct store_raw {
  char *dir;
  size_t value_bytes;
  rocksdb_t *db;
  rocksdb_options_t *opt;
  rocksdb_block_based_table_options_t *bbto;
  rocksdb_cache_t *cache;
  rocksdb_column_family_handle_t *cf;
  rocksdb_readoptions_t *ro;
  rocksdb_writeoptions_t *wo;
  rocksdb_writebatch_t *batch;
  uint8_t *val; /* one value being modified */
};

void store_raw_close(struct store_raw *r) {
  if (!r)
    return;
  if (r->db) {
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    char *e = NULL;
    rocksdb_flush_cf(r->db, fo, r->cf, &e);
    rocksdb_free(e);
    rocksdb_flushoptions_destroy(fo);
    rocksdb_column_family_handle_destroy(r->cf);
    rocksdb_close(r->db);
  }
  destroy_handles(r->opt, r->bbto, r->cache, r->ro, r->wo, r->batch);
  free(r->val);
  free(r->dir);
  free(r);
}

struct store_raw *store_raw_open(const char *dir, size_t memory_mb,
                                 size_t value_bytes, char *err,
                                 size_t errlen) {
  if (memory_mb < 4 || value_bytes < ROW_HEADER_LEN) {
    snprintf(err, errlen, "raw %s: memory_mb %zu (>= 4), value_bytes %zu (>= %d)",
             dir, memory_mb, value_bytes, ROW_HEADER_LEN);
    return NULL;
  }
  struct store_raw *r = xcalloc(1, sizeof(*r));
  r->dir = xstrdup(dir);
  r->value_bytes = value_bytes;
  /* The store's budget without a row cache: its memtables, and the row
   * cache's share given to the block cache. */
  const size_t total = memory_mb << 20, memtables = total / 4;
  base_options(total - memtables, memtables, 1, &r->cache, &r->bbto, &r->opt);
  rocksdb_options_set_block_based_table_factory(r->opt, r->bbto);
  rocksdb_options_set_write_buffer_size(r->opt, memtables / 2);
  rocksdb_options_set_max_write_buffer_number(r->opt, 2);
  const char *names[1] = {"default"};
  const rocksdb_options_t *opts[1] = {r->opt};
  char *e = NULL;
  r->db = rocksdb_open_column_families(r->opt, dir, 1, names, opts, &r->cf, &e);
  if (e || !r->db) {
    rerr(err, errlen, e, "cannot open RocksDB", dir);
    r->db = NULL;
    store_raw_close(r);
    return NULL;
  }
  r->ro = rocksdb_readoptions_create();
  r->wo = rocksdb_writeoptions_create();
  rocksdb_writeoptions_disable_WAL(r->wo, 1);
  r->batch = rocksdb_writebatch_create();
  r->val = xmalloc(value_bytes);
  return r;
}

/* The "modify" of read-modify-write: a found value of the right size is
 * kept, anything else starts as zeros; then every float after the header
 * gets a small step (no optimizer arithmetic: the baseline is RocksDB's
 * cost, not ours). */
static void raw_modify(struct store_raw *r, const char *v, size_t len) {
  if (v && len == r->value_bytes)
    memcpy(r->val, v, len);
  else
    memset(r->val, 0, r->value_bytes);
  float *f = (float *)(void *)(r->val + ROW_HEADER_LEN);
  const size_t nf = (r->value_bytes - ROW_HEADER_LEN) / sizeof(float);
  for (size_t j = 0; j < nf; j++) {
    float x;
    memcpy(&x, f + j, sizeof(x));
    x += 1e-3f;
    memcpy(f + j, &x, sizeof(x));
  }
}

int store_raw_put(struct store_raw *r, size_t n, const uint64_t *keys,
                  char *err, size_t errlen) {
  uint8_t k[KEYS_DB_KEY_LEN];
  for (size_t i = 0; i < n; i++) {
    raw_modify(r, NULL, 0);
    keys_db_key(0, keys[i], k);
    rocksdb_writebatch_put_cf(r->batch, r->cf, (const char *)k, sizeof(k),
                              (const char *)r->val, r->value_bytes);
  }
  char *e = NULL;
  rocksdb_write(r->db, r->wo, r->batch, &e);
  rocksdb_writebatch_clear(r->batch);
  return e ? rerr(err, errlen, e, "raw write", r->dir) : 0;
}

int store_raw_compact(struct store_raw *r, char *err, size_t errlen) {
  rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
  rocksdb_flushoptions_set_wait(fo, 1);
  char *e = NULL;
  rocksdb_flush_cf(r->db, fo, r->cf, &e);
  rocksdb_flushoptions_destroy(fo);
  if (e)
    return rerr(err, errlen, e, "raw flush", r->dir);
  rocksdb_compact_range_cf(r->db, r->cf, NULL, 0, NULL, 0);
  return 0;
}

int store_raw_rmw(struct store_raw *r, size_t n, const uint64_t *keys,
                  int batched, char *err, size_t errlen) {
  char *e = NULL;
  uint8_t k[KEYS_DB_KEY_LEN];
  if (!batched) {
    for (size_t i = 0; i < n; i++) {
      keys_db_key(0, keys[i], k);
      size_t len = 0;
      char *v = rocksdb_get_cf(r->db, r->ro, r->cf, (const char *)k, sizeof(k),
                               &len, &e);
      if (e)
        return rerr(err, errlen, e, "raw get", r->dir);
      raw_modify(r, v, len);
      rocksdb_free(v);
      rocksdb_put_cf(r->db, r->wo, r->cf, (const char *)k, sizeof(k),
                     (const char *)r->val, r->value_bytes, &e);
      if (e)
        return rerr(err, errlen, e, "raw put", r->dir);
    }
    return 0;
  }
  uint8_t *kb = xmalloc((n ? n : 1) * KEYS_DB_KEY_LEN);
  const char **kp = xmalloc((n ? n : 1) * sizeof(char *));
  size_t *ks = xmalloc((n ? n : 1) * sizeof(size_t));
  rocksdb_pinnableslice_t **vals = xcalloc(n ? n : 1, sizeof(*vals));
  char **errs = xcalloc(n ? n : 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    keys_db_key(0, keys[i], kb + i * KEYS_DB_KEY_LEN);
    kp[i] = (const char *)kb + i * KEYS_DB_KEY_LEN;
    ks[i] = KEYS_DB_KEY_LEN;
  }
  rocksdb_batched_multi_get_cf(r->db, r->ro, r->cf, n, kp, ks, vals, errs,
                               false);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (errs[i] && rc == 0 && strncmp(errs[i], "NotFound", 8) != 0) {
      rc = rerr(err, errlen, errs[i], "raw multiget", r->dir);
      errs[i] = NULL;
    }
    rocksdb_free(errs[i]);
    size_t len = 0;
    const char *v = vals[i] ? rocksdb_pinnableslice_value(vals[i], &len) : NULL;
    raw_modify(r, v, len);
    if (vals[i])
      rocksdb_pinnableslice_destroy(vals[i]);
    rocksdb_writebatch_put_cf(r->batch, r->cf, kp[i], ks[i],
                              (const char *)r->val, r->value_bytes);
  }
  if (rc == 0) {
    rocksdb_write(r->db, r->wo, r->batch, &e);
    if (e)
      rc = rerr(err, errlen, e, "raw write", r->dir);
  }
  rocksdb_writebatch_clear(r->batch);
  free(kb);
  free(kp);
  free(ks);
  free(vals);
  free(errs);
  return rc;
}

/* ---- tables across time: bulk loading, raw reads ------------------------
 * (store.h "Bulk loading and raw reads"; used by pserver/table.c and
 * pserver/warm.c.) */

#define BULK_FILE_BYTES (64u << 20) /* start a new SST file past this size */

struct store_bulk {
  struct store *s;
  rocksdb_envoptions_t *env;
  rocksdb_sstfilewriter_t *w; /* the open file, or NULL */
  uint64_t in_file;           /* keys in the open file */
  char **files;               /* finished files, to ingest */
  size_t nfiles, cap;
  char *cur;                  /* the open file's path */
  uint8_t last[KEYS_DB_KEY_LEN];
  int have_last;
  unsigned seq; /* this load's number in the store (file names) */
};

static int bulk_open_file(struct store_bulk *b, char *err, size_t errlen) {
  struct store *s = b->s;
  size_t n = strlen(s->dir) + 64;
  b->cur = xmalloc(n);
  snprintf(b->cur, n, "%s/bulk-%ld-%u-%zu.sst", s->dir, (long)getpid(),
           b->seq, b->nfiles);
  /* The rows family's options: the same block size, filter and
   * compression as the files RocksDB writes itself. (Uncompressed files
   * cut a migration's CPU by a fifth but took 2.2x the disk on
   * compressible rows, and ingested files may never be compacted.) */
  b->w = rocksdb_sstfilewriter_create(b->env, s->cfopt[CF_ROWS]);
  char *e = NULL;
  rocksdb_sstfilewriter_open(b->w, b->cur, &e);
  b->in_file = 0;
  if (e) {
    rocksdb_sstfilewriter_destroy(b->w);
    b->w = NULL;
    free(b->cur);
    b->cur = NULL;
    return rerr(err, errlen, e, "bulk load: create SST file", s->dir);
  }
  return 0;
}

/* Finishes the open file (an empty one is removed, not kept). */
static int bulk_close_file(struct store_bulk *b, char *err, size_t errlen) {
  if (!b->w)
    return 0;
  char *e = NULL;
  if (b->in_file)
    rocksdb_sstfilewriter_finish(b->w, &e);
  rocksdb_sstfilewriter_destroy(b->w);
  b->w = NULL;
  if (e || !b->in_file) {
    unlink(b->cur);
    free(b->cur);
    b->cur = NULL;
    return e ? rerr(err, errlen, e, "bulk load: finish SST file", b->s->dir)
             : 0;
  }
  if (b->nfiles == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 8;
    b->files = xrealloc(b->files, b->cap * sizeof(*b->files));
  }
  b->files[b->nfiles++] = b->cur;
  b->cur = NULL;
  return 0;
}

struct store_bulk *store_bulk_new(struct store *s, char *err, size_t errlen) {
  if (s->read_only) {
    snprintf(err, errlen, "store %s: opened read-only; bulk load refused",
             s->dir);
    return NULL;
  }
  struct store_bulk *b = xcalloc(1, sizeof(*b));
  b->s = s;
  b->env = rocksdb_envoptions_create();
  b->seq = ++s->bulk_seq;
  if (bulk_open_file(b, err, errlen) < 0) {
    store_bulk_free(b);
    return NULL;
  }
  return b;
}

int store_bulk_put(struct store_bulk *b, uint32_t table, uint64_t fid,
                   const void *value, size_t len, char *err, size_t errlen) {
  if (!find_table(b->s, table)) {
    snprintf(err, errlen, "store %s: bulk load: unknown table %u", b->s->dir,
             table);
    return -1;
  }
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(table, fid, k);
  if (b->have_last && memcmp(k, b->last, sizeof(k)) <= 0)
    return 1;
  if (!b->w) {
    snprintf(err, errlen, "store %s: bulk load already finished", b->s->dir);
    return -1;
  }
  uint64_t size = 0;
  /* One table per file: loads that split a set of tables by key range
   * (table.c's threads) then never ingest overlapping files. */
  int new_table = b->in_file && memcmp(k, b->last, 4) != 0;
  if (b->in_file && (new_table || (b->in_file & 1023) == 0)) {
    if (!new_table)
      rocksdb_sstfilewriter_file_size(b->w, &size);
    if ((new_table || size >= BULK_FILE_BYTES) &&
        (bulk_close_file(b, err, errlen) < 0 ||
         bulk_open_file(b, err, errlen) < 0))
      return -1;
  }
  char *e = NULL;
  rocksdb_sstfilewriter_put(b->w, (const char *)k, sizeof(k), value, len, &e);
  if (e)
    return rerr(err, errlen, e, "bulk load: write SST file", b->s->dir);
  memcpy(b->last, k, sizeof(k));
  b->have_last = 1;
  b->in_file++;
  return 0;
}

int store_bulk_finish(struct store_bulk *b, char *err, size_t errlen) {
  if (bulk_close_file(b, err, errlen) < 0)
    return -1;
  if (b->nfiles == 0)
    return 0;
  /* Rows cached before the load would shadow the ingested ones. */
  if (writeback_all(b->s, err, errlen) < 0)
    return -1;
  cache_clear(b->s->cache);
  rocksdb_ingestexternalfileoptions_t *io =
      rocksdb_ingestexternalfileoptions_create();
  rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
  char *e = NULL;
  rocksdb_ingest_external_file_cf(b->s->db, b->s->cf[CF_ROWS],
                                  (const char *const *)b->files, b->nfiles, io,
                                  &e);
  rocksdb_ingestexternalfileoptions_destroy(io);
  if (e)
    return rerr(err, errlen, e, "bulk load: ingest SST files", b->s->dir);
  for (size_t i = 0; i < b->nfiles; i++) {
    unlink(b->files[i]); /* moved: normally gone already */
    free(b->files[i]);
  }
  b->nfiles = 0;
  return 0;
}

void store_bulk_free(struct store_bulk *b) {
  if (!b)
    return;
  if (b->w) {
    rocksdb_sstfilewriter_destroy(b->w);
    unlink(b->cur);
  }
  free(b->cur);
  for (size_t i = 0; i < b->nfiles; i++) {
    unlink(b->files[i]);
    free(b->files[i]);
  }
  free(b->files);
  if (b->env)
    rocksdb_envoptions_destroy(b->env);
  free(b);
}

int store_get_raw(struct store *s, uint32_t table, uint64_t fid, uint8_t **out,
                  size_t *len, char *err, size_t errlen) {
  if (!table_or_err(s, table, err, errlen))
    return -1;
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(table, fid, k);
  char *e = NULL;
  size_t n = 0;
  char *v = rocksdb_get_cf(s->db, s->ro, s->cf[CF_ROWS], (const char *)k,
                           sizeof(k), &n, &e);
  if (e)
    return rerr(err, errlen, e, "read row", s->dir);
  *out = NULL;
  *len = 0;
  if (!v)
    return 0;
  *out = xmalloc(n ? n : 1);
  memcpy(*out, v, n);
  *len = n;
  rocksdb_free(v);
  return 1;
}

/* store_open proper, plus the ownership of the warm-start context: the
 * store frees it at close, and store_open frees it when it fails. */
struct store *store_open(const char *dir, const struct store_options *o,
                         char *err, size_t errlen) {
  struct store *s = store_open_impl(dir, o, err, errlen);
  if (s)
    s->warm_free = o->warm_free;
  else if (o->warm_free)
    o->warm_free(o->warm_ctx);
  return s;
}

void store_table_init_values(const struct store_table *t, uint64_t fid,
                             float *out, unsigned d) {
  CHECK(d <= t->dim, "init of %u floats, table %u has dim %u", d, t->id,
        t->dim);
  init_values(t, fid, out, 0, d);
}

int store_read_schema(const char *dir, struct store_table **out, size_t *n,
                      char *err, size_t errlen) {
  *out = NULL;
  *n = 0;
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "store %s: no such directory", dir);
    return -1;
  }
  rocksdb_options_t *opt = rocksdb_options_create();
  const rocksdb_options_t *cfo[CF_COUNT_] = {opt, opt, opt};
  rocksdb_column_family_handle_t *cf[CF_COUNT_] = {0};
  char *e = NULL;
  rocksdb_t *db = rocksdb_open_for_read_only_column_families(
      opt, dir, CF_COUNT_, cf_names, cfo, cf, 0, &e);
  if (e || !db) {
    rocksdb_options_destroy(opt);
    return rerr(err, errlen, e, "not a store (cannot open RocksDB read-only)",
                dir);
  }
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db, ro, cf[CF_DEFAULT]);
  size_t cap = 0;
  struct store_table *t = NULL;
  int rc = 0;
  for (rocksdb_iter_seek(it, "schema/", 7); rc == 0 && rocksdb_iter_valid(it);
       rocksdb_iter_next(it)) {
    size_t kl, vl;
    const char *k = rocksdb_iter_key(it, &kl), *v = rocksdb_iter_value(it, &vl);
    if (kl < 7 || memcmp(k, "schema/", 7) != 0)
      break;
    char ks[32] = "", vs[128] = "", oname[32] = "";
    memcpy(ks, k + 7, kl - 7 < sizeof(ks) - 1 ? kl - 7 : sizeof(ks) - 1);
    memcpy(vs, v, vl < sizeof(vs) - 1 ? vl : sizeof(vs) - 1);
    unsigned id, dim;
    int amtl, kind = -1;
    if (sscanf(ks, "%u", &id) == 1 &&
        sscanf(vs, "dim=%u opt=%31s amtl=%d", &dim, oname, &amtl) == 3)
      for (int o = 0; o < ROW_OPT_COUNT_; o++)
        if (!strcmp(oname, row_opt_name((enum row_opt)o)))
          kind = o;
    if (kind < 0 || dim < 1 || dim > ROW_MAX_DIM) {
      snprintf(err, errlen, "store %s: unreadable schema entry \"%s\"", dir,
               vs);
      rc = -1;
      break;
    }
    if (*n == cap) {
      cap = cap ? 2 * cap : 8;
      t = xrealloc(t, cap * sizeof(*t));
    }
    struct store_table *x = &t[(*n)++];
    memset(x, 0, sizeof(*x));
    x->id = id;
    x->dim = dim;
    x->amtl = amtl != 0;
    sparse_opt_defaults(&x->opt, (enum row_opt)kind);
    x->min_count = 1;
  }
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  for (int i = 0; i < CF_COUNT_; i++)
    if (cf[i])
      rocksdb_column_family_handle_destroy(cf[i]);
  rocksdb_close(db);
  rocksdb_options_destroy(opt);
  if (rc == 0 && *n == 0) {
    snprintf(err, errlen, "store %s: holds no table schema", dir);
    rc = -1;
  }
  if (rc < 0) {
    free(t);
    *n = 0;
    return -1;
  }
  qsort(t, *n, sizeof(*t), cmp_table);
  *out = t;
  return 0;
}

void store_iter_seek(struct store_iter *it, uint64_t fid) {
  uint8_t k[KEYS_DB_KEY_LEN];
  keys_db_key(it->t->id, fid, k);
  rocksdb_iter_seek(it->it, (const char *)k, sizeof(k));
  it->started = 0;
}

void store_iter_raw(const struct store_iter *it, const void **value,
                    size_t *len) {
  *value = rocksdb_iter_value(it->it, len);
}
