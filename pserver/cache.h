/*
 * cache: the pserver's hot-row cache, a byte-bounded map from (table,
 * feature id) to an encoded row (common/row.h bytes), with CLOCK eviction
 * and write-back of dirty rows through a callback.
 *
 * What it is: an open-addressing hash table (linear probing, backward-shift
 * deletion) whose slots are also the CLOCK ring. A get sets the slot's
 * reference bit; the hand clears bits and evicts the first slot whose bit is
 * already clear. A dirty row is handed to the write-back callback before it
 * is freed (the store appends it to a RocksDB WriteBatch).
 *
 * The budget is a hard bound: cache_bytes() counts every row's bytes plus a
 * fixed per-row overhead (CACHE_ROW_OVERHEAD, the allocator's header) plus
 * the slot array itself, and it never exceeds the budget: a put evicts
 * first, and a row that cannot fit even in an empty cache is not cached
 * (cache_put returns 0 and the caller writes it itself).
 *
 * What it is not: thread-safe (the store is used by one thread), nor aware
 * of RocksDB (the store includes rocksdb/c.h, this file does not).
 */
#ifndef MASKPS_CACHE_H
#define MASKPS_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes charged per cached row on top of its length: the allocator's
 * bookkeeping for the separately allocated row bytes. */
#define CACHE_ROW_OVERHEAD 16

/* Called with a dirty row that leaves the cache (eviction) or is cleaned
 * (cache_flush). The bytes are borrowed for the duration of the call. */
typedef void (*cache_writeback_fn)(void *ctx, uint32_t table, uint64_t fid,
                                   const void *data, size_t len);

struct cache;

/* A cache bounded by budget bytes (0 disables caching: every put returns
 * 0). Caller owns the result; free with cache_free(), which drops dirty rows
 * without writing them: call cache_flush() first. */
struct cache *cache_new(size_t budget, cache_writeback_fn fn, void *ctx);
void cache_free(struct cache *c);

/* The cached bytes of (table, fid), or NULL if absent. Marks the row
 * recently used. The pointer is valid until the next cache_put,
 * cache_remove or cache_free; *len gets the length. */
const void *cache_get(struct cache *c, uint32_t table, uint64_t fid,
                      size_t *len);

/* A hint that (table, fid) will be looked up soon: starts loading its
 * home slot into the CPU cache (row = 0), or finds it and starts loading
 * its row bytes (row = 1; cheap once the slot was prefetched). No effect
 * on contents or statistics. */
void cache_prefetch(const struct cache *c, uint32_t table, uint64_t fid,
                    int row);

/* Stores a copy of data as the row of (table, fid), replacing any cached
 * version (a replaced dirty row stays dirty: the new bytes supersede it and
 * will be written back instead). May evict other rows, writing dirty ones
 * back. Returns 1 if cached, 0 if the row does not fit in the budget at all
 * (nothing is cached for that key then, and a dirty row must be written by
 * the caller). */
int cache_put(struct cache *c, uint32_t table, uint64_t fid, const void *data,
              size_t len, int dirty);

/* Drops (table, fid) without writing it back. No-op if absent. */
void cache_remove(struct cache *c, uint32_t table, uint64_t fid);

/* Writes back every dirty row and marks it clean; rows stay cached. */
void cache_flush(struct cache *c);

/* Writes back at most max dirty rows (resuming where the previous call
 * stopped) and marks them clean. Returns how many it wrote: 0 once no row
 * is dirty. Lets the caller commit write-backs in bounded batches. */
size_t cache_flush_some(struct cache *c, size_t max);

/* Drops every row, writing dirty ones back first. */
void cache_clear(struct cache *c);

struct cache_stats {
  size_t bytes;     /* charged bytes, <= budget */
  size_t budget;    /* the bound */
  size_t rows;      /* cached rows */
  size_t dirty;     /* of which dirty */
  uint64_t hits;    /* cache_get found the row */
  uint64_t misses;  /* cache_get did not */
  uint64_t evicted; /* rows evicted to make room */
};
void cache_get_stats(const struct cache *c, struct cache_stats *out);

#endif
