/*
 * warm: warm start of a new run's sparse tables from an old run's stores
 * (config warm_start.tables; DESIGN.md "Warm start and migration").
 *
 * The old stores (any shard count S_old) are opened read-only. Each
 * directory's layout comes from its maskps-table.json manifest
 * (pserver/table.h); a directory without one (a plain run's db/shard-0 or
 * best/shard-<i>) is taken as shard i of the n directories in the order
 * given, with the tables its store recorded (store_read_schema). A
 * new store gets warm_get as its miss hook (store_options.warm_get): a key
 * the new store never held is looked up in old shard keys_shard(fid,
 * S_old), in the old table with the same id, and the row is brought to
 * the new table's schema:
 *   - values: the old prefix, truncated to D' or padded from the new
 *     table's deterministic init; fixed-D rows: p' = D'; AMTL rows:
 *     p' = min(p_old, D') (a fixed-D row becomes a full-length AMTL row and
 *     the AMTL layer picks its prefix from then on);
 *   - optimizer state: kept (truncated or padded with fresh state) when the
 *     old and new optimizers are the same kind, else fresh with opt_step 0;
 *   - stats: count and clicks kept; last_step 0 (the new run's clock);
 *   - pending rows (p = 0) and keys the old tables lack: not found, so the
 *     new store treats them as unseen.
 * The store then writes the row it got (copied forward), so each key is
 * read from the old tables at most once and the new store no longer needs
 * them afterwards.
 *
 * What it is not: thread-safe (one store, one thread, like the store), nor
 * a migration tool (maskps-table migrate copies everything up front).
 */
#ifndef MASKPS_WARM_H
#define MASKPS_WARM_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "pserver/store.h"

struct warm;

/* Opens the old store set dirs[0..n) read-only, each with memory_mb
 * (>= 4). The directories must be one complete set (layouts agreeing on
 * S_old and the tables, ranks 0..S_old-1 each once). Returns NULL with a
 * message naming the directory and the problem (missing directory or
 * manifest, incomplete set, RocksDB error). Caller owns it: warm_free. */
struct warm *warm_open(const char *const *dirs, size_t n, size_t memory_mb,
                       char *err, size_t errlen);

/* Closes the old stores and frees w. NULL-safe. (void * so that it can be
 * store_options.warm_free.) */
void warm_free(void *w);

/* The miss hook (store_options.warm_get; ctx is a struct warm). See
 * store.h for the contract. */
int warm_get(void *ctx, const struct store_table *t, uint64_t fid, uint8_t *buf,
             size_t cap, size_t *len, char *err, size_t errlen);

/* Rows found in the old tables so far (for logs and tests). */
uint64_t warm_rows_found(const struct warm *w);

/* Sets o's warm-start hook from cfg->warm_start: with tables listed and
 * read_through on, opens them (memory: pserver.memory_mb / 4 over the old
 * shards, at least 4 MB each) and hands the context to the store
 * (o->warm_free: the store frees it). Nothing listed: o unchanged.
 * Returns 0, or -1 with a message starting "warm_start." when the old
 * tables cannot be opened, or read_through is off (importing the old
 * tables before training is not implemented: `maskps-table migrate` them
 * into the new layout instead). */
int warm_attach(const struct config *cfg, struct store_options *o, char *err,
                size_t errlen);

#endif
