/*
 * ps_local: the parameter store of common/ps.h in-process, over S open
 * stores (embedded mode, DESIGN.md): no sockets, no copies through msgpack,
 * the same sharding as the network client (keys_shard(fid, S), dense blocks
 * by ps_dense_block), so an embedded run and a distributed one with S
 * pservers store the same rows.
 *
 * It also holds the per-shard steps that the pserver (pserver/server.c)
 * runs for each request, so the two paths share one implementation of the
 * wire conventions: a pending (not admitted) key pulls as plen 0 with no
 * floats; a push's plen 0 means "keep the stored prefix"; a checkpoint of
 * shard i goes to dir/shard-<i>.
 *
 * And the mapping from a config to store tables and options, which both
 * maskps-pserver and the embedded wiring use, so they cannot disagree.
 *
 * Not thread-safe (the stores are not): one thread uses a ps_local.
 */
#ifndef MASKPS_PS_LOCAL_H
#define MASKPS_PS_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/ps.h"
#include "pserver/store.h"

/* A parameter store over stores[0..nshards): stores[i] is shard i and must
 * hold dense block i of dense_total floats (ps_dense_block) as its dense
 * shard. tables (copied) describe the tables the stores were opened with.
 * The stores are BORROWED: they must outlive the result and are not closed
 * by ps_free. Returns NULL with err set when nshards is 0 or tables is
 * empty. Caller owns the result; free with ps_free(). */
struct ps *ps_local_new(struct store *const *stores, uint32_t nshards,
                        const struct store_table *tables, size_t ntables,
                        uint64_t dense_total, char *err, size_t errlen);

/* The table with id `id` in tables[0..n), or NULL. */
const struct store_table *ps_local_table(const struct store_table *tables,
                                         size_t n, uint32_t id);

/* One shard's pull in the wire convention of ps.h: like store_pull, but a
 * pending key gets plen 0 and no floats. vals must hold n * t->dim floats.
 * Returns the floats written, or -1 with err set. */
long ps_local_shard_pull(struct store *s, const struct store_table *t, size_t n,
                         const uint64_t *keys, uint16_t *plen, uint32_t *count,
                         uint32_t *clicks, float *vals, char *err,
                         size_t errlen);

/* One shard's push in the wire convention: plen NULL or all 0 keeps every
 * prefix; on a table without AMTL every plen must be 0 or D; on an AMTL
 * table a 0 among other lengths keeps that key's stored prefix (looked up
 * with a pull). count NULL = 1, clicks NULL = 0. Returns 0, or -1 with err
 * set and nothing applied. */
int ps_local_shard_push(struct store *s, const struct store_table *t, size_t n,
                        const uint64_t *keys, const uint16_t *glen,
                        const float *grads, const uint16_t *plen,
                        const uint32_t *count, const uint32_t *clicks,
                        uint64_t step, char *err, size_t errlen);

/* Checkpoint of shard `shard` into dir/shard-<shard>; dir is created if it
 * does not exist. Returns 0, or -1 with err set. */
int ps_local_shard_checkpoint(struct store *s, uint32_t shard, const char *dir,
                              char *err, size_t errlen);

/* Tables 0..ntables-1 as cfg describes them: embedding.dim, init_std,
 * min_count, ttl_steps, amtl (+ warm-up), the sparse optimizer and its
 * hyper-parameters, embedding.l2 as weight decay (lazy with
 * optimizer.lazy_l2), optimizer.adaptive_reg_lambda as the DIN term, seed
 * train.seed. out must hold ntables entries. Every field has the same
 * table settings: a config has no per-field table section yet. */
void ps_local_tables_from_config(const struct config *cfg, uint32_t ntables,
                                 struct store_table *out);

/* Store options of one shard: pserver.memory_mb, pserver.wal, the dense
 * Adam of the optimizer section, dense_size = this shard's block of
 * dense_total. Tables are left for the caller to set. */
void ps_local_store_options(const struct config *cfg, uint64_t dense_total,
                            uint32_t nshards, uint32_t shard,
                            struct store_options *o);

#endif
