/* Warm start from old tables; see warm.h. */
#include "pserver/warm.h"

#include "common/check.h"
#include "common/keys.h"
#include "common/row.h"
#include "pserver/table.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct warm {
  uint32_t S;              /* old shards */
  struct store **st;       /* [S] by rank, read-only */
  struct table_layout lay; /* rank 0's manifest (all agree) */
  float *values, *state;   /* decode buffers (ROW_MAX_DIM, 2x) */
  float *init;             /* [ROW_MAX_DIM] */
  uint64_t found;
};

void warm_free(void *ctx) {
  struct warm *w = ctx;
  if (!w)
    return;
  for (uint32_t r = 0; w->st && r < w->S; r++)
    store_close(w->st[r], NULL, 0); /* read-only: writes nothing */
  free(w->st);
  table_layout_free(&w->lay);
  free(w->values);
  free(w->state);
  free(w->init);
  free(w);
}

static int same_tables(const struct table_layout *a,
                       const struct table_layout *b) {
  if (a->ntables != b->ntables)
    return 0;
  for (size_t k = 0; k < a->ntables; k++) {
    const struct store_table *x = &a->tables[k], *y = &b->tables[k];
    if (x->id != y->id || x->dim != y->dim || x->opt.kind != y->opt.kind ||
        x->amtl != y->amtl)
      return 0;
  }
  return 1;
}

/* dir's manifest, or without one (a plain run's store: maskps train
 * writes none) the store's own schema, taking dir as shard i of n. */
static int read_layout(const char *dir, size_t i, size_t n,
                       struct table_layout *l, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/%s", dir, TABLE_MANIFEST);
  if (access(path, F_OK) == 0)
    return table_manifest_read(dir, l, err, errlen);
  memset(l, 0, sizeof(*l));
  if (store_read_schema(dir, &l->tables, &l->ntables, err, errlen) < 0)
    return -1;
  l->shards = (uint32_t)n;
  l->rank = (uint32_t)i;
  return 0;
}

struct warm *warm_open(const char *const *dirs, size_t n, size_t memory_mb,
                       char *err, size_t errlen) {
  if (n == 0 || n > UINT32_MAX) {
    snprintf(err, errlen, "no old table directories given");
    return NULL;
  }
  struct warm *w = xcalloc(1, sizeof(*w));
  w->S = (uint32_t)n;
  w->st = xcalloc(n, sizeof(*w->st));
  struct table_layout *lay = xcalloc(n, sizeof(*lay));
  const char **by_rank = xcalloc(n, sizeof(*by_rank));
  int rc = 0;
  size_t nread = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (read_layout(dirs[i], i, n, &lay[i], err, errlen) < 0) {
      rc = -1;
      break;
    }
    nread++;
    if (lay[i].shards != n) {
      snprintf(err, errlen,
               "%s: shard %" PRIu32 " of a %" PRIu32
               "-shard set, but %zu directories were given; list all %" PRIu32
               " shards",
               dirs[i], lay[i].rank, lay[i].shards, n, lay[i].shards);
      rc = -1;
    } else if (by_rank[lay[i].rank]) {
      snprintf(err, errlen, "%s and %s are both shard %" PRIu32,
               by_rank[lay[i].rank], dirs[i], lay[i].rank);
      rc = -1;
    } else if (i > 0 && !same_tables(&lay[0], &lay[i])) {
      snprintf(err, errlen,
               "%s and %s: their manifests list different tables; they are "
               "not shards of one set",
               dirs[0], dirs[i]);
      rc = -1;
    } else {
      by_rank[lay[i].rank] = dirs[i];
    }
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    const struct table_layout *l = &lay[i];
    struct store_table *t = xmalloc((l->ntables ? l->ntables : 1) * sizeof(*t));
    memcpy(t, l->tables, l->ntables * sizeof(*t));
    for (size_t k = 0; k < l->ntables; k++)
      t[k].ttl_steps = 0; /* serve every stored row */
    struct store_options o;
    store_options_defaults(&o);
    o.tables = t;
    o.ntables = l->ntables;
    o.memory_mb = memory_mb < 4 ? 4 : memory_mb;
    o.create_if_missing = 0;
    o.read_only = 1;
    w->st[l->rank] = store_open(dirs[i], &o, err, errlen);
    free(t);
    if (!w->st[l->rank])
      rc = -1;
  }
  if (rc == 0) {
    w->lay = lay[0];
    memset(&lay[0], 0, sizeof(lay[0]));
  }
  for (size_t i = 0; i < nread; i++)
    table_layout_free(&lay[i]);
  free(lay);
  free(by_rank);
  if (rc < 0) {
    warm_free(w);
    return NULL;
  }
  w->values = xmalloc(sizeof(float) * ROW_MAX_DIM);
  w->state = xmalloc(sizeof(float) * 2 * ROW_MAX_DIM);
  w->init = xmalloc(sizeof(float) * ROW_MAX_DIM);
  return w;
}

static const struct store_table *old_table(const struct warm *w, uint32_t id) {
  for (size_t k = 0; k < w->lay.ntables; k++)
    if (w->lay.tables[k].id == id)
      return &w->lay.tables[k];
  return NULL;
}

int warm_get(void *ctx, const struct store_table *t, uint64_t fid, uint8_t *buf,
             size_t cap, size_t *len, char *err, size_t errlen) {
  struct warm *w = ctx;
  const struct store_table *ot = old_table(w, t->id);
  if (!ot)
    return 0;
  uint32_t r = keys_shard(fid, w->S);
  uint8_t *raw = NULL;
  size_t rawlen = 0;
  int got = store_get_raw(w->st[r], t->id, fid, &raw, &rawlen, err, errlen);
  if (got <= 0)
    return got;
  struct row in, out;
  char e[160];
  in.values = w->values;
  in.state = w->state;
  struct row hdr;
  if (row_peek(raw, rawlen, &hdr, e, sizeof(e)) < 0 || hdr.p > ROW_MAX_DIM ||
      row_decode(raw, rawlen, &in, e, sizeof(e)) < 0) {
    snprintf(err, errlen,
             "warm start: old table %u key 0x%016" PRIx64 " (shard %" PRIu32
             "): %s",
             t->id, fid, r, hdr.p > ROW_MAX_DIM ? "prefix too long" : e);
    free(raw);
    return -1;
  }
  free(raw);
  if (in.p == 0) /* pending in the old run: unseen here */
    return 0;
  const unsigned p = t->amtl ? (in.p < t->dim ? in.p : t->dim) : t->dim;
  const unsigned keep = in.p < p ? in.p : p;
  const unsigned oslots = row_slots((enum row_opt)in.opt);
  const unsigned slots = row_slots(t->opt.kind);
  const int keep_state = in.opt == (uint8_t)t->opt.kind;
  /* In place: values and each state slot move to stride p (slots are
   * slot-major with stride in.p). Moving down when p < in.p and up when
   * p > in.p, so go in the order that never overwrites unread floats. */
  float *vals = w->values, *st = w->state;
  if (keep_state && slots) {
    if (p < in.p)
      for (unsigned s = 0; s < slots; s++)
        memmove(st + (size_t)s * p, st + (size_t)s * in.p,
                sizeof(float) * keep);
    else if (p > in.p)
      for (unsigned s = slots; s-- > 0;)
        memmove(st + (size_t)s * p, st + (size_t)s * in.p,
                sizeof(float) * keep);
  }
  (void)oslots;
  if (p > keep) {
    store_table_init_values(t, fid, w->init, p);
    memcpy(vals + keep, w->init + keep, sizeof(float) * (p - keep));
  }
  if (slots) {
    if (keep_state) {
      /* fresh state for the padded tail of each slot */
      float tail[2 * ROW_MAX_DIM];
      if (p > keep) {
        sparse_opt_init_state(&t->opt, tail, p, 0, p);
        for (unsigned s = 0; s < slots; s++)
          memcpy(st + (size_t)s * p + keep, tail + (size_t)s * p + keep,
                 sizeof(float) * (p - keep));
      }
    } else {
      sparse_opt_init_state(&t->opt, st, p, 0, p);
    }
  }
  out = in;
  out.version = ROW_VERSION;
  out.opt = (uint8_t)t->opt.kind;
  out.p = (uint16_t)p;
  out.values = vals;
  out.state = st;
  out.last_step = 0;
  if (!keep_state)
    out.opt_step = 0;
  size_t n = row_encode(&out, buf, cap);
  if (n == 0) {
    snprintf(err, errlen,
             "warm start: table %u key 0x%016" PRIx64
             ": row does not fit the store's buffer",
             t->id, fid);
    return -1;
  }
  *len = n;
  w->found++;
  return 1;
}

uint64_t warm_rows_found(const struct warm *w) {
  return w ? w->found : 0;
}

int warm_attach(const struct config *cfg, struct store_options *o, char *err,
                size_t errlen) {
  const struct config_strings *ts = &cfg->warm_start.tables;
  if (ts->n == 0)
    return 0;
  if (!cfg->warm_start.read_through) {
    snprintf(err, errlen,
             "warm_start.read_through: false (import the old tables before "
             "training) is not implemented; set it to true, or migrate the "
             "old tables with maskps-table migrate");
    return -1;
  }
  size_t mb = (size_t)(cfg->pserver.memory_mb > 0 ? cfg->pserver.memory_mb : 0);
  mb = mb / 4 / ts->n;
  char e[1024];
  struct warm *w =
      warm_open((const char *const *)ts->v, ts->n, mb, e, sizeof(e));
  if (!w) {
    snprintf(err, errlen, "warm_start.tables: %s", e);
    return -1;
  }
  o->warm_get = warm_get;
  o->warm_ctx = w;
  o->warm_free = warm_free;
  return 0;
}
