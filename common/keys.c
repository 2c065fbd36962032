#include "common/keys.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>

/* The field index seeds the hash: the same token in two fields gives two
 * unrelated ids, without building a "field:token" string per feature. */
static uint64_t field_seed(uint32_t field) {
  return keys_mix64(0x6d61736b70730000ull ^ (uint64_t)field);
}

uint64_t keys_feature_id(uint32_t field, const void *token, size_t len) {
  return XXH3_64bits_withSeed(token, len, field_seed(field));
}

uint64_t keys_missing_id(uint32_t field) {
  return keys_mix64(field_seed(field) ^ 0x4d495353494e4700ull);
}

uint32_t keys_shard(uint64_t key, uint32_t nshards) {
  /* Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm". */
  int64_t b = -1, j = 0;
  while (j < (int64_t)nshards) {
    b = j;
    key = key * 2862933555777941757ull + 1;
    j = (int64_t)((double)(b + 1) *
                  ((double)(1ull << 31) / (double)((key >> 33) + 1)));
  }
  return (uint32_t)b;
}

int64_t keys_criteo_bucket(double x) {
  if (isnan(x))
    return 0;
  if (x > DBL_MAX) /* +inf: the largest bucket */
    x = DBL_MAX;
  if (x > 2) { /* ln(x)^2 <= 503791 for every finite double */
    double l = log(x);
    return (int64_t)floor(l * l);
  }
  if (x < -9.2e18) /* (int64_t) of an out-of-range double is undefined */
    return INT64_MIN;
  return (int64_t)x;
}

void keys_db_key(uint32_t table, uint64_t fid, uint8_t out[KEYS_DB_KEY_LEN]) {
  for (int i = 0; i < 4; i++)
    out[i] = (uint8_t)(table >> (24 - 8 * i));
  for (int i = 0; i < 8; i++)
    out[4 + i] = (uint8_t)(fid >> (56 - 8 * i));
}

int keys_db_key_parse(const void *buf, size_t len, uint32_t *table,
                      uint64_t *fid) {
  if (len != KEYS_DB_KEY_LEN)
    return -1;
  const uint8_t *b = buf;
  uint32_t t = 0;
  uint64_t f = 0;
  for (int i = 0; i < 4; i++)
    t = t << 8 | b[i];
  for (int i = 0; i < 8; i++)
    f = f << 8 | b[4 + i];
  *table = t;
  *fid = f;
  return 0;
}

uint64_t keys_mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
