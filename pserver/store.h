/*
 * store: one pserver shard's parameters: sparse embedding tables in one
 * RocksDB, the optimizer applied here, a hot-row cache above RocksDB, and a
 * dense shard (a slice of the flat dense vector, Adam on the server).
 *
 * What it is not: a server (maskps-pserver wraps it behind ZeroMQ), nor
 * thread-safe: one thread owns a store and calls everything on it (RocksDB's
 * own background threads flush and compact; the compaction filter reads only
 * immutable table options and an atomic step).
 *
 * Layout in RocksDB (this file's store.c is the only one that includes
 * rocksdb/c.h). Column families:
 *   "default"  metadata: the schema of each table (dim, optimizer, amtl),
 *              the dense size, the largest step seen (so TTL survives a
 *              restart);
 *   "rows"     every sparse row of every table: key = keys_db_key(table,
 *              fid) (12 bytes, big-endian, so one table's rows are one
 *              contiguous range in feature-id order), value = the row format
 *              of common/row.h (header + p values + optimizer slots, one
 *              value, so value and state are always written together);
 *   "dense"    the dense shard in chunks of STORE_DENSE_CHUNK floats.
 * Why one "rows" family with a table prefix rather than a family per table:
 * a config may have dozens of tables (one per field); each family has its
 * own memtables, so the memory budget would grow with the table count and be
 * split into small, inefficient write buffers; one family keeps one bounded
 * memtable budget, one compaction filter, and a table is still one range for
 * iteration (keys_db_key's prefix) or DeleteRange.
 *
 * Memory: options.memory_mb bounds what the store holds, whatever the table
 * size: 50% the hot-row cache (exact bound, see pserver/cache.h), 25% the
 * RocksDB block cache (LRU; index and filter blocks are charged to it too),
 * 25% the memtables (db_write_buffer_size across all families; the rows
 * family gets write buffers of 1/8 each, two at most). Not counted: the
 * dense shard (16 bytes per float: value, m, v, step count), the working
 * buffers of one pull/push (proportional to its key count), RocksDB's
 * table readers for open files. memory_mb must be >= 4.
 *
 * Rows (DESIGN.md "A row"):
 *   - Unseen keys are initialised deterministically from hash(seed, table,
 *     key, dim): value j = init_std * N(0,1) from keys_mix64 and Box-Muller,
 *     a pure function of (seed, table, fid, j), never of arrival order or of
 *     D, so a grown AMTL prefix gets the values the full row would have had.
 *   - Admission (min_count > 1): a key seen fewer than min_count times is
 *     kept as a pending row (p = 0: count, clicks, last step only). It pulls
 *     as zeros with p = D and STORE_PULL_PENDING, and its gradients are
 *     dropped (they were computed against zeros). The push that brings the
 *     count to min_count admits it: values = the deterministic init, fresh
 *     optimizer state, and that push's gradient is dropped too. With
 *     min_count <= 1 every key is admitted at first sight, so an unseen key
 *     pulls as its init values (count 0) and its first push applies.
 *   - Expiry (ttl_steps > 0): a row whose last_step is more than ttl_steps
 *     behind the largest step the store has seen reads as unseen (fresh
 *     init, count 0), and a compaction filter deletes it from disk
 *     (store_compact forces a full compaction).
 *   - AMTL (amtl = 1): a push carries each key's new prefix length k in
 *     1..D; the row keeps exactly k values and k optimizer slots (the
 *     row's bytes are 32 + 4 k (1 + slots)). Growing fills the new tail
 *     with the deterministic init and fresh optimizer state; shrinking drops
 *     the tail. Shrinking is ignored before step amtl_warmup_steps (the twin
 *     networks are still random then; growth is always allowed). A new
 *     row starts with p = D.
 *
 * Durability (options.wal):
 *   STORE_WAL_SYNC   each push writes its rows in one WriteBatch with an
 *                    fsync'ed WAL before returning: it survives kill -9 and
 *                    power loss. The row cache is write-through.
 *   STORE_WAL_ASYNC  the same WriteBatch, WAL written but not fsync'ed: it
 *                    survives kill -9 (the bytes are in the OS page cache);
 *                    a kernel crash or power loss may lose the last pushes.
 *   STORE_WAL_OFF    write-back: dirty rows stay in the row cache and reach
 *                    RocksDB (without WAL) when evicted, or at store_flush,
 *                    store_checkpoint, store_close, which also flush the
 *                    memtables to SST files. A crash loses every push since
 *                    the last store_flush, and may keep some of them (rows
 *                    evicted and flushed by RocksDB on its own): recover from
 *                    a checkpoint. The fast mode for training. A failed
 *                    write of evicted rows (disk full) loses those rows'
 *                    latest updates; the error is returned by the call that
 *                    evicted them.
 *   Dense state is written at store_flush/checkpoint/close in every mode.
 *
 * Errors: functions that can meet an outside fault (RocksDB, disk, a corrupt
 * stored row, bad arguments from the wire) return -1 or NULL with a message
 * in err (errlen bytes). A failed pull/push changes nothing.
 */
#ifndef MASKPS_STORE_H
#define MASKPS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/row.h"
#include "pserver/sparse_opt.h"

#define STORE_MAX_TABLES 1024
#define STORE_DENSE_CHUNK 16384 /* floats per persisted dense chunk */

enum store_wal { STORE_WAL_SYNC, STORE_WAL_ASYNC, STORE_WAL_OFF };

/* One sparse table. */
struct store_table {
  uint32_t id;                /* table id (the key prefix) */
  unsigned dim;               /* D, 1..ROW_MAX_DIM */
  struct sparse_opt opt;      /* optimizer and its hyper-parameters */
  int amtl;                   /* 1: rows keep a pushed prefix length */
  uint64_t amtl_warmup_steps; /* no shrinking before this step */
  uint32_t min_count;         /* admission threshold; <= 1 = admit at once */
  uint64_t ttl_steps;         /* expire rows unseen this long; 0 = never */
  float init_std;             /* init values ~ N(0, init_std^2) */
  uint64_t seed;              /* init seed */
};

struct store_options {
  const struct store_table *tables; /* borrowed during store_open */
  size_t ntables;                   /* entries in tables */
  size_t memory_mb;                 /* total budget, see above; >= 4 */
  enum store_wal wal;               /* durability, see above */
  size_t dense_size;                /* floats in the dense shard; 0 = none */
  struct sparse_opt dense; /* dense Adam: lr, beta1, beta2, eps, decay */
  int create_if_missing;   /* 0: refuse a directory that is not a store */
  /* 1: open an existing store read-only (RocksDB's read-only mode): pulls
   * and iteration work, nothing is ever written (no metadata; flush and
   * close write nothing, so dense values set are not kept); push and bulk
   * loads fail. For the sources of migrations and warm starts. */
  int read_only;
  /* Warm start (pserver/warm.h): called for every key of a pull or push
   * that the store does not hold (never stored, not expired). It returns
   * 1 with the key's row for table t, encoded (common/row.h) in t's
   * schema, in buf (cap bytes) and its length in *len; 0 if it has no row
   * for the key; -1 with err set on a fault (the operation fails). A
   * returned row is used as if it had been stored, and written to the
   * store (copied forward), so the hook is asked once per key. NULL =
   * none. The context is borrowed for the store's lifetime. */
  int (*warm_get)(void *ctx, const struct store_table *t, uint64_t fid,
                  uint8_t *buf, size_t cap, size_t *len, char *err,
                  size_t errlen);
  void *warm_ctx;
  /* Frees warm_ctx; NULL = the caller keeps it. When set, store_open takes
   * the context over: freed by store_close, or by store_open if it fails. */
  void (*warm_free)(void *ctx);
};

struct store;

/* Fills o with defaults: no tables, 256 MB, WAL async, no dense shard,
 * Adam defaults for dense, create_if_missing = 1. */
void store_options_defaults(struct store_options *o);

/* Opens (or creates) the store in directory dir. Validates the options,
 * and refuses a store whose saved table schema (dim, optimizer, amtl)
 * differs from the options' or whose dense size differs. Returns NULL with
 * a message naming dir on any failure (bad options, dir not usable, RocksDB
 * error, schema mismatch). Caller owns the result; close with
 * store_close(). */
struct store *store_open(const char *dir, const struct store_options *o,
                         char *err, size_t errlen);

/* Writes back dirty rows and dense state, closes RocksDB and frees s.
 * Returns 0, or -1 if the final write failed (s is freed anyway). NULL is
 * a no-op returning 0. */
int store_close(struct store *s, char *err, size_t errlen);

/* Pull output: caller-owned arrays for n keys. values receives the rows'
 * values back to back (ragged: key i's p[i] floats start at the sum of the
 * previous p), so it must hold n * D floats. */
enum { STORE_PULL_PENDING = 1 }; /* flags: not admitted, values are zeros */
struct store_pull_out {
  uint16_t *p;      /* [n] floats returned per key (stored prefix or D) */
  uint32_t *count;  /* [n] occurrences seen (0 for unseen/expired) */
  uint32_t *clicks; /* [n] positive labels seen */
  uint8_t *flags;   /* [n] STORE_PULL_*; may be NULL */
  float *values;    /* [sum p] ragged values */
};

/* Reads n keys of table. Admitted rows return their stored prefix; unseen
 * (or expired) keys return the deterministic init with p = D when the table
 * admits at once, and zeros with p = D and STORE_PULL_PENDING otherwise
 * (pending keys carry their count and clicks). Read-only, except that rows
 * read from disk enter the cache. Returns the total floats written, or -1
 * (unknown table, corrupt stored row named by key, RocksDB error). */
long store_pull(struct store *s, uint32_t table, size_t n, const uint64_t *keys,
                const struct store_pull_out *out, char *err, size_t errlen);

/* One push to n distinct keys of table at global step `step`:
 *   gp[i]     floats of key i's gradient (ragged in grads, back to back);
 *             entries past a row's stored p are ignored, missing entries
 *             count as 0; gp may be NULL: every key has D floats;
 *   grads     the gradients, summed over the batch by the worker;
 *   new_p     AMTL prefix length per key (1..D), NULL = keep; only for amtl
 *             tables;
 *   counts    occurrences of the key in the batch (NULL = 1 each);
 *   clicks    positive labels among them (NULL = 0).
 * Per key: stats are added, the row is admitted or created as described
 * above, the optimizer applied to an admitted row (gradient first, then the
 * prefix change), and value + state + stats written as one row. Keys must
 * be distinct (the worker sums a batch's gradients per key). Returns 0, or
 * -1 with nothing applied (unknown table, duplicate key, bad prefix length,
 * corrupt stored row, RocksDB write error). */
int store_push(struct store *s, uint32_t table, size_t n, const uint64_t *keys,
               const uint16_t *gp, const float *grads, const uint16_t *new_p,
               const uint32_t *counts, const uint32_t *clicks, uint64_t step,
               char *err, size_t errlen);

/* The deterministic initial values of (table, fid): d floats, d <= D. The
 * same numbers a fresh row gets. Returns 0, -1 for an unknown table. */
int store_init_values(const struct store *s, uint32_t table, uint64_t fid,
                      float *out, unsigned d);

/* Writes back dirty rows and dense state, records metadata, and flushes
 * the memtables, so everything so far is on disk even with WAL off.
 * Returns 0 or -1. */
int store_flush(struct store *s, char *err, size_t errlen);

/* store_flush, then a RocksDB checkpoint (hard links where possible) into
 * dir, which must not exist yet (an existing one is refused with a message
 * before anything is written). The checkpoint opens with store_open like
 * any store. The source stays open and unchanged. Returns 0 or -1. */
int store_checkpoint(struct store *s, const char *dir, char *err,
                     size_t errlen);

/* Forces a full compaction of the rows (so the TTL filter runs over every
 * row); blocks until done. Returns 0 or -1. */
int store_compact(struct store *s, char *err, size_t errlen);

/* Dense shard: floats [off, off + len) of the store's dense_size.
 * store_dense_set overwrites values (initial weights, warm start) and resets
 * their Adam state; store_dense_push applies one Adam step with grads;
 * store_dense_pull copies values out. Return 0, or -1 if the range is
 * outside the shard. store_dense_loaded says whether the values came from
 * disk at open (1) or started as zeros (0). */
int store_dense_set(struct store *s, size_t off, size_t len,
                    const float *values, char *err, size_t errlen);
int store_dense_push(struct store *s, size_t off, size_t len,
                     const float *grads, char *err, size_t errlen);
int store_dense_pull(struct store *s, size_t off, size_t len, float *out,
                     char *err, size_t errlen);
int store_dense_loaded(const struct store *s);

/* The plateau schedule (train.lr_decay_factor): every table's optimizer lr
 * (FTRL: its alpha) and the dense Adam's lr become scale times the ones the
 * store was opened with (absolute, not compounded: 0.01 after two decays
 * of 0.1). Not persisted: a reopened store starts at scale 1. Returns 0,
 * or -1 for a scale that is not a positive number. */
int store_set_lr_scale(struct store *s, float scale, char *err,
                       size_t errlen);

struct store_stats {
  uint64_t rows_estimate;            /* rocksdb.estimate-num-keys of "rows" */
  uint64_t sst_bytes;                /* rocksdb.total-sst-files-size */
  uint64_t live_bytes;               /* rocksdb.estimate-live-data-size */
  uint64_t memtable_bytes;           /* rocksdb.cur-size-all-mem-tables */
  uint64_t pending_compaction_bytes; /* ...estimate-pending-compaction-bytes */
  uint64_t write_stopped;            /* rocksdb.is-write-stopped (0/1) */
  uint64_t delayed_write_rate;       /* rocksdb.actual-delayed-write-rate, B/s;
                                        nonzero while RocksDB stalls writes */
  uint64_t block_cache_bytes;        /* usage of the LRU block cache */
  uint64_t block_cache_budget;       /* its capacity: memory_mb / 4 */
  uint64_t row_cache_bytes;  /* see pserver/cache.h; <= row_cache_budget */
  uint64_t row_cache_budget; /* memory_mb / 2 */
  uint64_t row_cache_rows;   /* rows in the row cache */
  uint64_t row_cache_hits, row_cache_misses; /* lookups since open */
  double row_cache_hit_rate; /* hits / (hits + misses), 0 if none */
  uint64_t expired;          /* rows dropped by the TTL filter */
  uint64_t admitted;         /* rows admitted since open */
  uint64_t max_step;         /* largest step seen (TTL clock) */
};

/* Cheap statistics (RocksDB properties and counters). Returns 0 or -1. */
int store_stats(struct store *s, struct store_stats *out, char *err,
                size_t errlen);

/* Per-table statistics by a full scan of the table (O(rows): for the
 * inspect tool and occasional logs). hist must hold D + 1 counters: hist[0]
 * counts pending rows, hist[k] rows storing a prefix of k. */
struct store_table_stats {
  uint64_t rows;        /* stored rows, pending included */
  uint64_t pending;     /* rows with p = 0 */
  uint64_t value_bytes; /* sum of encoded row sizes */
  double mean_p;        /* mean prefix over admitted rows */
};
int store_table_scan(struct store *s, uint32_t table,
                     struct store_table_stats *out, uint64_t *hist, char *err,
                     size_t errlen);

/* Iteration over every stored row of one table, in feature-id order, as of
 * the moment store_iter_new is called (dirty cached rows are written back
 * first; pushes made while iterating are not seen). Expired rows not yet
 * compacted away are included. Caller owns the iterator; free with
 * store_iter_free() before store_close(). Returns NULL with err set for an
 * unknown table or a write-back failure. */
struct store_iter;
struct store_iter *store_iter_new(struct store *s, uint32_t table, char *err,
                                  size_t errlen);
/* The next row: 1 with *fid and *r filled (r->values/r->state point into the
 * iterator, valid until the next call), 0 at the end, -1 on a corrupt row
 * or RocksDB error (message in err). */
int store_iter_next(struct store_iter *it, uint64_t *fid, struct row *r,
                    char *err, size_t errlen);
void store_iter_free(struct store_iter *it);

/* Moves it to the table's first row with a feature id >= fid (the next
 * store_iter_next returns it). Iterators of one store may then be read
 * from different threads, one thread each (RocksDB iterators are
 * independent); creating and freeing them stay on the store's thread. */
void store_iter_seek(struct store_iter *it, uint64_t fid);

/* The encoded bytes (common/row.h) of the row store_iter_next returned
 * last (1): valid until the next call. For copies that change nothing. */
void store_iter_raw(const struct store_iter *it, const void **value,
                    size_t *len);

/* For tests of corruption handling: writes raw bytes as the value of
 * (table, fid), bypassing the row format and the cache (the cached row, if
 * any, is dropped). Returns 0 or -1. */
int store_debug_put_raw(struct store *s, uint32_t table, uint64_t fid,
                        const void *value, size_t len, char *err,
                        size_t errlen);

/* ---- Benchmark only: the raw RocksDB baseline --------------------------
 * bench/bench_store.c compares the store with plain RocksDB doing the same
 * read-modify-write. The baseline lives here rather than in the benchmark
 * because store.c is the one file that includes rocksdb/c.h, and because
 * sharing store.c's option code guarantees the same settings: the same
 * memtable budget (memory_mb / 4), the row cache's share given to the block
 * cache (so raw RocksDB gets the whole memory_mb, 3/4 of it as block cache),
 * Bloom filters, index/filter blocks in the cache, the same 12-byte keys
 * (keys_db_key(0, fid)), and the WAL off (like STORE_WAL_OFF). Values are
 * value_bytes opaque bytes; the "modify" adds a constant to each float
 * after a 32-byte header (no optimizer: it measures RocksDB alone). Not for
 * production use: no schema, no tables, no checks beyond RocksDB's. */
struct store_raw;

/* Opens (creating) a raw RocksDB in dir. NULL with err on failure. Caller
 * owns it; close with store_raw_close(). */
struct store_raw *store_raw_open(const char *dir, size_t memory_mb,
                                 size_t value_bytes, char *err, size_t errlen);

/* Writes a fresh value for each of n keys, in one WriteBatch. 0 or -1. */
int store_raw_put(struct store_raw *r, size_t n, const uint64_t *keys,
                  char *err, size_t errlen);

/* Flushes the memtables and compacts everything (as store_compact does
 * for a store), blocking. 0 or -1. */
int store_raw_compact(struct store_raw *r, char *err, size_t errlen);

/* Read-modify-write of n distinct keys. batched = 1: one batched MultiGet,
 * then one WriteBatch of n puts; batched = 0: Get then Put per key. An
 * absent key is written as if it had been zeros. 0 or -1. */
int store_raw_rmw(struct store_raw *r, size_t n, const uint64_t *keys,
                  int batched, char *err, size_t errlen);

/* Flushes the memtables (waiting), closes and frees r. NULL is a no-op. */
void store_raw_close(struct store_raw *r);

/* The deterministic init of (t, fid) without a store: d <= t->dim floats,
 * the values store_init_values gives for a store holding t. */
void store_table_init_values(const struct store_table *t, uint64_t fid,
                             float *out, unsigned d);

/* ---- Bulk loading and raw reads (tables across time) -------------------
 * For the offline tools (pserver/table.c: migrate, import; the raw reads
 * also for warm start, pserver/warm.c). A bulk load writes rows into SST
 * files beside the store's RocksDB (SstFileWriter, with the rows family's
 * options) and ingests them at finish (moving the files, not copying):
 * several times the rate of one Put per row (a standalone test: 2.1M
 * against 0.37M rows/s), because nothing goes through the memtable, the
 * WAL or a later compaction. Rows must come in strictly ascending (table,
 * fid) order (keys_db_key order); the row cache is written back and
 * emptied at finish, and an ingested row replaces a stored one; meant for
 * a fresh destination that nobody pulls or pushes meanwhile. Until finish,
 * nothing is visible in the store; a crash leaves only stray "bulk-*.sst"
 * files in the directory. A load starts a new file at each table (and
 * every 64 MB), so loads that split the key space by feature-id range
 * never ingest overlapping files. Several loads of one store may be fed
 * from different threads, one thread each (store_bulk_put only reads the
 * store); create, finish and free them on the store's thread. */
struct store_bulk;

/* Starts a bulk load into s. NULL with err if s is read-only or the first
 * SST file cannot be created. Caller owns it: store_bulk_finish, then
 * store_bulk_free. */
struct store_bulk *store_bulk_new(struct store *s, char *err, size_t errlen);

/* Adds one encoded row (value bytes) for (table, fid). Returns 0; 1 if
 * (table, fid) does not come after the previous key (nothing added: the
 * caller finishes this load and writes the rest another way); -1 with err
 * for an unknown table or an SST write error. */
int store_bulk_put(struct store_bulk *b, uint32_t table, uint64_t fid,
                   const void *value, size_t len, char *err, size_t errlen);

/* Closes the current SST file and ingests every file of this load into the
 * store (move_files). Returns 0 or -1. After it, only store_bulk_free. */
int store_bulk_finish(struct store_bulk *b, char *err, size_t errlen);

/* Removes the load's unfinished SST files (if any) and frees b. NULL-safe. */
void store_bulk_free(struct store_bulk *b);

/* The stored bytes of (table, fid) straight from RocksDB (the row cache is
 * not consulted: use on stores nobody pushes to, e.g. read-only ones).
 * Returns 1 with *out (malloc'ed, caller frees) and *len, 0 if absent, -1
 * with err on a RocksDB error or an unknown table. */
int store_get_raw(struct store *s, uint32_t table, uint64_t fid, uint8_t **out,
                  size_t *len, char *err, size_t errlen);

/* The table schema a store directory recorded (id, dim, optimizer kind,
 * amtl; the rest are defaults: the store does not record seeds, init_std,
 * hyper-parameters), read without knowing the tables and without writing.
 * Returns 0 with *out (malloc'ed, sorted by id, caller frees) and *n, or
 * -1 with err (no directory, not a store, no schema). */
int store_read_schema(const char *dir, struct store_table **out, size_t *n,
                      char *err, size_t errlen);

#endif
