#include "pserver/cache.h"

#include "common/check.h"
#include "common/keys.h"

#include <stdlib.h>
#include <string.h>

struct slot {
  uint64_t fid;   /* feature id */
  uint32_t table; /* table id */
  uint32_t len;   /* bytes at data */
  uint8_t used;   /* slot holds a row */
  uint8_t ref;    /* CLOCK reference bit */
  uint8_t dirty;  /* newer than RocksDB: write back before dropping */
  uint8_t *data;  /* owned row bytes */
};

#define MIN_CAP 64

struct cache {
  size_t budget; /* bound on bytes */
  size_t bytes;  /* rows' len + overhead, plus cap * sizeof(slot) */
  size_t rows;   /* used slots */
  size_t dirty;  /* dirty slots */
  size_t cap;    /* slots; 0 or a power of two */
  size_t hand;   /* CLOCK hand, an index into slots */
  size_t fpos;   /* where cache_flush_some resumes */
  struct slot *slots;
  cache_writeback_fn fn;
  void *ctx;
  uint64_t hits, misses, evicted;
};

static size_t home(const struct cache *c, uint32_t table, uint64_t fid) {
  return (size_t)keys_mix64(fid ^ keys_mix64(table)) & (c->cap - 1);
}

/* Index of (table, fid), or (size_t)-1. */
static size_t find(const struct cache *c, uint32_t table, uint64_t fid) {
  if (!c->cap)
    return (size_t)-1;
  for (size_t i = home(c, table, fid);; i = (i + 1) & (c->cap - 1)) {
    const struct slot *s = &c->slots[i];
    if (!s->used)
      return (size_t)-1;
    if (s->fid == fid && s->table == table)
      return i;
  }
}

struct cache *cache_new(size_t budget, cache_writeback_fn fn, void *ctx) {
  struct cache *c = xcalloc(1, sizeof(*c));
  c->budget = budget;
  c->fn = fn;
  c->ctx = ctx;
  return c;
}

void cache_free(struct cache *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i].used)
      free(c->slots[i].data);
  free(c->slots);
  free(c);
}

void cache_prefetch(const struct cache *c, uint32_t table, uint64_t fid,
                    int row) {
  if (!c->cap)
    return;
  if (!row) {
    __builtin_prefetch(&c->slots[home(c, table, fid)]);
    return;
  }
  size_t i = find(c, table, fid);
  if (i == (size_t)-1)
    return;
  const uint8_t *d = c->slots[i].data;
  for (size_t off = 0; off < c->slots[i].len; off += 64)
    __builtin_prefetch(d + off);
}

const void *cache_get(struct cache *c, uint32_t table, uint64_t fid,
                      size_t *len) {
  size_t i = find(c, table, fid);
  if (i == (size_t)-1) {
    c->misses++;
    return NULL;
  }
  c->hits++;
  c->slots[i].ref = 1;
  *len = c->slots[i].len;
  return c->slots[i].data;
}

/* Empties slot i (its row already written back or dropped) and restores
 * the probe chains by shifting later entries back. */
static void delete_at(struct cache *c, size_t i) {
  struct slot *s = &c->slots[i];
  c->bytes -= s->len + CACHE_ROW_OVERHEAD;
  c->rows--;
  if (s->dirty)
    c->dirty--;
  free(s->data);
  const size_t mask = c->cap - 1;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!c->slots[j].used)
      break;
    size_t k = home(c, c->slots[j].table, c->slots[j].fid);
    /* Leave j alone if its home lies cyclically in (i, j]. */
    int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (!stays) {
      c->slots[i] = c->slots[j];
      i = j;
    }
  }
  memset(&c->slots[i], 0, sizeof(c->slots[i]));
}

static void evict_one(struct cache *c) {
  CHECK(c->rows > 0, "evict from an empty cache");
  for (;;) {
    struct slot *s = &c->slots[c->hand];
    if (s->used) {
      if (s->ref) {
        s->ref = 0;
      } else {
        if (s->dirty)
          c->fn(c->ctx, s->table, s->fid, s->data, s->len);
        c->evicted++;
        delete_at(c, c->hand);
        return; /* the hand stays: a shifted row may now sit here */
      }
    }
    c->hand = (c->hand + 1) & (c->cap - 1);
  }
}

static void rehash(struct cache *c, size_t newcap) {
  struct slot *old = c->slots;
  size_t oldcap = c->cap;
  c->slots = xcalloc(newcap, sizeof(struct slot));
  c->cap = newcap;
  c->bytes =
      c->bytes - oldcap * sizeof(struct slot) + newcap * sizeof(struct slot);
  c->hand = 0;
  for (size_t i = 0; i < oldcap; i++) {
    if (!old[i].used)
      continue;
    size_t j = home(c, old[i].table, old[i].fid);
    while (c->slots[j].used)
      j = (j + 1) & (newcap - 1);
    c->slots[j] = old[i];
  }
  free(old);
}

void cache_remove(struct cache *c, uint32_t table, uint64_t fid) {
  size_t i = find(c, table, fid);
  if (i != (size_t)-1)
    delete_at(c, i);
}

int cache_put(struct cache *c, uint32_t table, uint64_t fid, const void *data,
              size_t len, int dirty) {
  CHECK(len <= UINT32_MAX, "len %zu", len);
  size_t i = find(c, table, fid);
  if (i != (size_t)-1 && c->slots[i].len == len) {
    /* Same size (every push of a row that keeps its prefix): overwrite in
     * place; the bytes charged do not change. */
    struct slot *s = &c->slots[i];
    memmove(s->data, data, len); /* data may be s->data itself */
    s->ref = 1;
    if (dirty && !s->dirty) {
      s->dirty = 1;
      c->dirty++;
    }
    return 1;
  }
  if (i != (size_t)-1) {
    dirty |= c->slots[i].dirty;
    delete_at(c, i);
  }
  const size_t need = len + CACHE_ROW_OVERHEAD;
  const size_t ss = sizeof(struct slot);
  if (need + MIN_CAP * ss > c->budget)
    return 0;
  for (;;) {
    if ((c->rows + 1) * 4 > c->cap * 3) { /* keep the load <= 3/4 */
      size_t newcap = c->cap ? 2 * c->cap : MIN_CAP;
      if (c->bytes - c->cap * ss + newcap * ss + need <= c->budget)
        rehash(c, newcap);
      else
        evict_one(c);
      continue;
    }
    if (c->bytes + need > c->budget) {
      if (!c->rows)
        return 0; /* a large empty slot array: cannot fit */
      evict_one(c);
      continue;
    }
    break;
  }
  size_t j = home(c, table, fid);
  while (c->slots[j].used)
    j = (j + 1) & (c->cap - 1);
  struct slot *s = &c->slots[j];
  s->fid = fid;
  s->table = table;
  s->len = (uint32_t)len;
  s->used = 1;
  s->ref = 1;
  s->dirty = (uint8_t)(dirty != 0);
  s->data = xmalloc(len ? len : 1);
  memcpy(s->data, data, len);
  c->bytes += need;
  c->rows++;
  c->dirty += s->dirty;
  CHECK(c->bytes <= c->budget, "cache %zu > budget %zu", c->bytes, c->budget);
  return 1;
}

size_t cache_flush_some(struct cache *c, size_t max) {
  size_t done = 0;
  const size_t start = c->fpos;
  for (size_t k = 0; k < c->cap && c->dirty && done < max; k++) {
    const size_t i = (start + k) & (c->cap - 1);
    struct slot *s = &c->slots[i];
    if (s->used && s->dirty) {
      c->fn(c->ctx, s->table, s->fid, s->data, s->len);
      s->dirty = 0;
      c->dirty--;
      done++;
      c->fpos = (i + 1) & (c->cap - 1);
    }
  }
  return done;
}

void cache_flush(struct cache *c) {
  cache_flush_some(c, (size_t)-1);
}

void cache_clear(struct cache *c) {
  cache_flush(c);
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i].used)
      free(c->slots[i].data);
  free(c->slots);
  c->slots = NULL;
  c->cap = 0;
  c->hand = 0;
  c->rows = 0;
  c->bytes = 0;
}

void cache_get_stats(const struct cache *c, struct cache_stats *out) {
  *out = (struct cache_stats){
      .bytes = c->bytes,
      .budget = c->budget,
      .rows = c->rows,
      .dirty = c->dirty,
      .hits = c->hits,
      .misses = c->misses,
      .evicted = c->evicted,
  };
}
