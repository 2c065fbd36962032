/*
 * keys: feature ids, shards and the Criteo numeric bucketing rule.
 *
 * A feature id is a 64-bit hash of (field, raw token) with xxHash's XXH3, a
 * well-known, stable, fast hash whose values do not change between versions
 * of the library (XXH3's output is frozen since 0.8.0). Two different
 * (field, token) pairs collide with probability about n^2 / 2^65 for n distinct
 * values: ~3e-8 for 1e6 values, ~3e-2 for 1e9. A collision merges two feature
 * values into one row; at CTR scale that is noise, but it is not impossible.
 *
 * Shards: jump consistent hash (Lamping & Veach 2014) of the feature id over S
 * shards. Growing S to S+1 moves about 1/(S+1) of the keys, all of them to the
 * new shard; no lookup table is needed.
 *
 * RocksDB keys are big-endian so that one table's rows sort together and in
 * feature-id order.
 */
#ifndef MASKPS_KEYS_H
#define MASKPS_KEYS_H

#include <stddef.h>
#include <stdint.h>

/* Feature id of a raw token in a field. `field` is the field's index in the
 * config's schema; the token is hashed as bytes (no terminator needed). */
uint64_t keys_feature_id(uint32_t field, const void *token, size_t len);

/* The id a field uses for "missing" (empty token) and for tokens that map to
 * the field's out-of-vocabulary row. Distinct from every real token's id
 * except by a 2^-64 accident. */
uint64_t keys_missing_id(uint32_t field);

/* Jump consistent hash: a shard in [0, nshards). nshards must be >= 1. */
uint32_t keys_shard(uint64_t key, uint32_t nshards);

/* The Criteo/FuxiCTR numeric bucketing rule, as a token value:
 * x > 2 -> floor(ln(x)^2); otherwise (int)x. Missing is handled by the
 * caller (keys_missing_id). Works for any double, including negatives. */
int64_t keys_criteo_bucket(double x);

/* Big-endian (table, feature id) RocksDB key: writes KEYS_DB_KEY_LEN bytes. */
#define KEYS_DB_KEY_LEN 12
void keys_db_key(uint32_t table, uint64_t fid, uint8_t out[KEYS_DB_KEY_LEN]);
/* Inverse of keys_db_key; returns -1 if len != KEYS_DB_KEY_LEN. */
int keys_db_key_parse(const void *buf, size_t len, uint32_t *table,
                      uint64_t *fid);

/* splitmix64 finaliser: a cheap bijective 64-bit mixer, used for
 * deterministic per-key initial values (hash(seed, key)). */
uint64_t keys_mix64(uint64_t x);

#endif
