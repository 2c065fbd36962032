/*
 * table: offline tools over stopped shard stores (DESIGN.md "Warm start and
 * migration"): inspect, export / import, migrate between layouts, verify.
 * The `maskps-table` program (pserver/main_table.c) is a thin argv layer
 * over these functions, so tests run them in-process.
 *
 * What it is not: a live tool. Every store named here must be closed by its
 * pserver; the stores are opened with the public store API (pserver/store.h)
 * and rows are read with store_iter_* and written as raw encoded rows.
 *
 * The manifest. A store does not record its shard layout, its init seed or
 * init_std (only "dim opt amtl" per table, internally), so every store
 * directory these tools read carries a small text file TABLE_MANIFEST
 * ("maskps-table.json", JSON, written by this module; see
 * docs/table-format.md):
 *   {"format": "maskps-table", "version": 1, "row_version": 1,
 *    "shards": S, "rank": r,
 *    "tables": [{"id": 1, "dim": 16, "opt": "adagrad", "amtl": 0,
 *                "seed": 1234, "init_std": 0.01, "min_count": 1,
 *                "ttl_steps": 0, "amtl_warmup_steps": 0}, ...]}
 * A set of directories is one table only if their manifests agree on S and
 * the tables, and their ranks are 0..S-1, each once; anything else is
 * refused before a byte is written. Every row of rank r satisfies
 * keys_shard(fid, S) == r (verify counts the rows that do not).
 *
 * Destinations (migrate, import, export) are written into "<dest>.tmp-<pid>"
 * and renamed into place only after the whole job (and, for stores, a verify
 * of what was written) succeeded. A destination that exists and is not an
 * empty directory is refused before anything is written. A killed job leaves
 * only its .tmp-<pid> directories, which the next run removes (when that pid
 * is no longer alive) before it starts; the sources are only read: every
 * store the tool did not create is opened read-only (store_options.
 * read_only, RocksDB's read-only mode), so not a byte of a source changes.
 *
 * Memory is bounded whatever the table size: rows stream one at a time
 * between iterators and stores opened with memory_mb each.
 *
 * Test hook: with MASKPS_TABLE_KILL_AFTER=N in the environment, a job that
 * writes rows raises SIGKILL right after its N-th row (crash tests).
 */
#ifndef MASKPS_TABLE_H
#define MASKPS_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pserver/store.h"

#define TABLE_MANIFEST "maskps-table.json"
#define TABLE_MANIFEST_VERSION 1
#define TABLE_EXPORT_MAGIC "MASKPSTB" /* 8 bytes, no terminator */
#define TABLE_EXPORT_END "MASKPEND"   /* trailer magic */
#define TABLE_EXPORT_VERSION 1
#define TABLE_EXPORT_HEADER_LEN 64
#define TABLE_EXPORT_TRAILER_LEN 24

/* The layout of one store directory, as its manifest says. */
struct table_layout {
  uint32_t shards;            /* S: stores in the set */
  uint32_t rank;              /* this directory's shard, 0..S-1 */
  size_t ntables;             /* entries in tables */
  struct store_table *tables; /* owned; sorted by id; optimizer defaults */
};

/* Writes dir/TABLE_MANIFEST (atomically: a temporary file, fsync, rename).
 * Returns 0, or -1 with a message naming the file. */
int table_manifest_write(const char *dir, const struct table_layout *l,
                         char *err, size_t errlen);

/* Reads dir/TABLE_MANIFEST into l (caller frees with table_layout_free).
 * Returns 0, or -1 with a message: no directory, no manifest (with a hint
 * to write one), unreadable or malformed JSON, a newer version, bad
 * values. */
int table_manifest_read(const char *dir, struct table_layout *l, char *err,
                        size_t errlen);

/* Frees l's tables; l itself is the caller's. NULL-safe. */
void table_layout_free(struct table_layout *l);

/* Progress and hook settings shared by the jobs. */
struct table_io {
  size_t memory_mb; /* per open store (>= 4); 0 = 64 */
  int progress;     /* 1: a progress line on stderr (main: isatty(2)) */
  FILE *out;        /* report lines (verify sums, inspect); NULL = none */
};

/* ---- verify ---- */

/* Per-table sums. values_sum: the sum mod 2^64 of a 64-bit hash of
 * (table, key, p, bits of values[0..p)) over the rows; full_sum: the same
 * with the stats (count, clicks, last_step, opt_step, flags), the optimizer
 * and the state floats. Both are order-independent, so they compare sets of
 * rows across shard layouts. */
struct table_sum {
  uint32_t table;      /* table id */
  uint64_t rows;       /* stored rows, pending included */
  uint64_t pending;    /* rows with p = 0 */
  uint64_t values_sum; /* see above */
  uint64_t full_sum;   /* see above */
  uint64_t misplaced;  /* rows whose keys_shard(fid, S) is not their rank */
};

/* The hash of one row in values_sum / full_sum (docs/table-format.md
 * describes it; exposed so that other tools can compute the same sums). */
uint64_t table_row_hash_values(uint32_t table, uint64_t fid,
                               const struct row *r);
uint64_t table_row_hash_full(uint32_t table, uint64_t fid, const struct row *r);

/* Verifies the store set dirs[0..n): manifests agree, every row decodes,
 * none is misplaced. Fills *sums (malloc'ed, caller frees; one per table in
 * id order) and *nsums, and prints one line per table to io->out. Returns
 * 0, or -1 with a message (bad set, corrupt row, misplaced rows). */
int table_verify(const char *const *dirs, size_t n, const struct table_io *io,
                 struct table_sum **sums, size_t *nsums, char *err,
                 size_t errlen);

/* ---- inspect ---- */

/* Prints, for each directory, its manifest (format version, shards, rank)
 * and per table: D, optimizer, amtl, rows, pending, bytes of rows, mean
 * prefix and the prefix-length histogram; then totals per table over the
 * set. Directories need not form a full set. Returns 0 or -1. */
int table_inspect(const char *const *dirs, size_t n, const struct table_io *io,
                  char *err, size_t errlen);

/* ---- migrate / import ---- */

enum table_prefix_rule {
  TABLE_PREFIX_KEEP, /* AMTL destination: p' = min(p, D') */
  TABLE_PREFIX_FREQ, /* AMTL destination: p' from the row's count, below */
};

/* What a migration (or an import) changes; table_migrate_defaults = copy. */
struct table_migrate_opts {
  unsigned dim;   /* D' for every table; 0 = keep each table's D */
  int amtl;       /* 1: AMTL rows, 0: fixed-D rows, TABLE_KEEP: as source */
  int opt;        /* enum row_opt of the destination; TABLE_KEEP = same */
  int drop_state; /* 1: fresh optimizer state, opt_step 0 */
  enum table_prefix_rule prefix;
  /* "prefix from frequency": p' = clamp(ceil(D' * ln(1 + count) /
   * ln(1 + full_count)), min_prefix, D'); rows seen full_count times or
   * more keep D'. Pending rows (p = 0) stay pending. */
  uint32_t full_count;    /* 0 = 1024 */
  unsigned min_prefix;    /* 0 = 1 */
  uint32_t min_count;     /* keep rows with count >= this (0/1 = all) */
  uint64_t min_last_step; /* keep rows with last_step >= this (0 = all) */
  int no_verify;          /* 1: skip the verify of the destination */
};
#define TABLE_KEEP (-1)

/* Fills o with "copy everything unchanged" (amtl, opt = TABLE_KEEP). */
void table_migrate_defaults(struct table_migrate_opts *o);

/* Rows moved and what happened to them, for the report and tests. */
struct table_migrate_report {
  uint64_t rows_in;   /* rows read from the sources */
  uint64_t rows_out;  /* rows written */
  uint64_t filtered;  /* dropped by min_count / min_last_step */
  uint64_t truncated; /* rows whose prefix got shorter */
  uint64_t padded;    /* rows padded from the init */
  double seconds;     /* wall time of the copy (without verify) */
};

/* Migrates the store set from[0..nfrom) into a new set to[0..nto) of nto
 * shards (destination rank i = to[i], a row goes to keys_shard(fid, nto)),
 * applying o (D change by truncation or padding from store_init_values,
 * AMTL prefix rule, optimizer, filters). Prints the source sums, the
 * expected and the found destination sums (unless o->no_verify) to
 * io->out. The source shards are merged in key order, so each destination
 * receives its rows in key order, and rows are bulk-loaded (store_bulk_*:
 * SST files ingested at the end, not one Put each). Two threads copy, each
 * over half of the feature-id space (docs/table-format.md "Throughput").
 * Returns 0 with every to[i] in place, or -1 with a message and nothing
 * written at the destinations. rep may be NULL. */
int table_migrate(const char *const *from, size_t nfrom, const char *const *to,
                  size_t nto, const struct table_migrate_opts *o,
                  const struct table_io *io, struct table_migrate_report *rep,
                  char *err, size_t errlen);

/* ---- export / import ---- */

/* Writes one file per table, <outdir>/table-<id>.mpt, in the format of
 * docs/table-format.md (64-byte header, fixed-size records with values
 * padded to D, a trailer with the row count and an FNV-1a 64 of the
 * records). with_state = 0 leaves the optimizer state out. outdir must not
 * hold data. Returns 0 or -1 (nothing left at outdir). */
int table_export(const char *const *from, size_t nfrom, const char *outdir,
                 int with_state, const struct table_io *io, char *err,
                 size_t errlen);

/* Reads export files files[0..nfiles) (one table each, distinct ids) and
 * writes them, transformed by o as in table_migrate, into a new store set
 * to[0..nto), bulk-loaded while the rows come in key order (as exports
 * write them); from the first row out of order on, one Put per row (one
 * thread). A file without state gets fresh state. Checks magic,
 * version, sizes and the trailer checksum before the destination is
 * renamed into place. Returns 0 or -1 (nothing written). */
int table_import(const char *const *files, size_t nfiles, const char *const *to,
                 size_t nto, const struct table_migrate_opts *o,
                 const struct table_io *io, struct table_migrate_report *rep,
                 char *err, size_t errlen);

#endif
