/* ps_local: common/ps.h in-process over S stores (see ps_local.h). */
#include "pserver/ps_local.h"

#include "common/check.h"
#include "common/keys.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- per-shard steps (shared with pserver/server.c) -------------------- */

const struct store_table *ps_local_table(const struct store_table *tables,
                                         size_t n, uint32_t id) {
  for (size_t i = 0; i < n; i++)
    if (tables[i].id == id)
      return &tables[i];
  return NULL;
}

long ps_local_shard_pull(struct store *s, const struct store_table *t, size_t n,
                         const uint64_t *keys, uint16_t *plen, uint32_t *count,
                         uint32_t *clicks, float *vals, char *err,
                         size_t errlen) {
  uint8_t *flags = xmalloc(n ? n : 1);
  struct store_pull_out out = {plen, count, clicks, flags, vals};
  long total = store_pull(s, t->id, n, keys, &out, err, errlen);
  if (total < 0) {
    free(flags);
    return -1;
  }
  /* Drop the D zeros of each pending key, in place: the write position
   * never passes the read position. */
  size_t rd = 0, wr = 0;
  for (size_t i = 0; i < n; i++) {
    size_t p = plen[i];
    if (flags[i] & STORE_PULL_PENDING) {
      plen[i] = 0;
    } else {
      if (wr != rd)
        memmove(vals + wr, vals + rd, p * sizeof(float));
      wr += p;
    }
    rd += p;
  }
  CHECK(rd == (size_t)total, "store_pull returned %ld, plen sums to %zu", total,
        rd);
  free(flags);
  return (long)wr;
}

int ps_local_shard_push(struct store *s, const struct store_table *t, size_t n,
                        const uint64_t *keys, const uint16_t *glen,
                        const float *grads, const uint16_t *plen,
                        const uint32_t *count, const uint32_t *clicks,
                        uint64_t step, char *err, size_t errlen) {
  size_t nonzero = 0;
  for (size_t i = 0; plen && i < n; i++)
    nonzero += plen[i] != 0;
  if (!t->amtl) {
    for (size_t i = 0; plen && i < n; i++)
      if (plen[i] != 0 && plen[i] != t->dim) {
        snprintf(err, errlen,
                 "table %u has no AMTL prefixes: key 0x%016llx asks for a "
                 "prefix of %u (send 0 or the dim %u)",
                 t->id, (unsigned long long)keys[i], plen[i], t->dim);
        return -1;
      }
    return store_push(s, t->id, n, keys, glen, grads, NULL, count, clicks, step,
                      err, errlen);
  }
  if (nonzero == 0)
    return store_push(s, t->id, n, keys, glen, grads, NULL, count, clicks, step,
                      err, errlen);
  if (nonzero == n)
    return store_push(s, t->id, n, keys, glen, grads, plen, count, clicks, step,
                      err, errlen);
  /* Some keys keep their prefix: the store wants a length for every key,
   * so read the stored ones (a pending or unseen key reads as D, which the
   * store ignores for a row that holds no values). */
  uint16_t *np = xmalloc(n * sizeof(uint16_t));
  uint32_t *c = xmalloc(n * sizeof(uint32_t) * 2);
  float *v = xmalloc(n * t->dim * sizeof(float));
  struct store_pull_out out = {np, c, c + n, NULL, v};
  int rc = -1;
  if (store_pull(s, t->id, n, keys, &out, err, errlen) >= 0) {
    for (size_t i = 0; i < n; i++)
      if (plen[i])
        np[i] = plen[i];
    rc = store_push(s, t->id, n, keys, glen, grads, np, count, clicks, step,
                    err, errlen);
  }
  free(np);
  free(c);
  free(v);
  return rc;
}

int ps_local_shard_checkpoint(struct store *s, uint32_t shard, const char *dir,
                              char *err, size_t errlen) {
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    snprintf(err, errlen, "checkpoint: cannot create directory %s: %s", dir,
             strerror(errno));
    return -1;
  }
  size_t len = strlen(dir) + 32;
  char *path = xmalloc(len);
  snprintf(path, len, "%s/shard-%u", dir, shard);
  int rc = store_checkpoint(s, path, err, errlen);
  free(path);
  return rc;
}

/* ---- config mapping ----------------------------------------------------- */

void ps_local_tables_from_config(const struct config *cfg, uint32_t ntables,
                                 struct store_table *out) {
  static const enum row_opt opt_of[] = {
      [CONFIG_SPARSE_SGD] = ROW_OPT_SGD,
      [CONFIG_SPARSE_ADAGRAD] = ROW_OPT_ADAGRAD,
      [CONFIG_SPARSE_ADAM] = ROW_OPT_ADAM,
      [CONFIG_SPARSE_FTRL] = ROW_OPT_FTRL,
  };
  const struct config_embedding *e = &cfg->embedding;
  const struct config_optimizer *o = &cfg->optimizer;
  CHECK((size_t)o->sparse < ARRAY_LEN(opt_of), "sparse optimizer %d",
        (int)o->sparse);
  for (uint32_t i = 0; i < ntables; i++) {
    struct store_table *t = &out[i];
    memset(t, 0, sizeof(*t));
    t->id = i;
    t->dim = (unsigned)e->dim;
    sparse_opt_defaults(&t->opt, opt_of[o->sparse]);
    if (o->sparse == CONFIG_SPARSE_FTRL) {
      t->opt.lr = (float)o->ftrl_alpha;
      t->opt.ftrl_beta = (float)o->ftrl_beta;
      t->opt.l1 = (float)o->ftrl_l1;
      t->opt.l2 = (float)o->ftrl_l2;
    } else {
      t->opt.lr = (float)o->sparse_lr;
      t->opt.weight_decay = (float)e->l2;
      t->opt.lazy_decay = o->lazy_l2;
    }
    t->opt.beta1 = (float)o->beta1;
    t->opt.beta2 = (float)o->beta2;
    t->opt.eps = (float)o->eps;
    t->opt.adagrad_init = (float)o->adagrad_init_acc;
    t->opt.freq_l2 = (float)o->adaptive_reg_lambda;
    t->amtl = e->amtl;
    t->amtl_warmup_steps = (uint64_t)e->amtl_warmup_steps;
    t->min_count = (uint32_t)e->min_count;
    t->ttl_steps = (uint64_t)e->ttl_steps;
    t->init_std = (float)e->init_std;
    t->seed = (uint64_t)cfg->train.seed;
  }
}

void ps_local_store_options(const struct config *cfg, uint64_t dense_total,
                            uint32_t nshards, uint32_t shard,
                            struct store_options *o) {
  static const enum store_wal wal_of[] = {
      [CONFIG_WAL_SYNC] = STORE_WAL_SYNC,
      [CONFIG_WAL_ASYNC] = STORE_WAL_ASYNC,
      [CONFIG_WAL_OFF] = STORE_WAL_OFF,
  };
  store_options_defaults(o);
  o->memory_mb = (size_t)cfg->pserver.memory_mb;
  CHECK((size_t)cfg->pserver.wal < ARRAY_LEN(wal_of), "wal %d",
        (int)cfg->pserver.wal);
  o->wal = wal_of[cfg->pserver.wal];
  uint64_t off, len;
  ps_dense_block(dense_total, nshards, shard, &off, &len);
  o->dense_size = (size_t)len;
  o->dense.lr = (float)cfg->optimizer.lr;
  o->dense.beta1 = (float)cfg->optimizer.beta1;
  o->dense.beta2 = (float)cfg->optimizer.beta2;
  o->dense.eps = (float)cfg->optimizer.eps;
  o->dense.weight_decay = (float)cfg->optimizer.dense_l2;
}

/* ---- the ps implementation ---------------------------------------------- */

struct local {
  struct store **stores; /* [S] borrowed */
  uint32_t S;
  struct store_table *tables; /* [ntables] copy */
  size_t ntables;
  uint64_t dense_total;
  /* Scratch for splitting one request over shards, grown as needed. */
  uint32_t *shard_of; /* [n] */
  size_t cap;
  /* Started pulls (ps_pull_start): done at start, so there is nothing to
   * wait for; a slot only remembers the result for ps_pull_finish. */
  bool started[PS_MAX_STARTED];    /* slot in use */
  long started_rc[PS_MAX_STARTED]; /* its floats */
};

static void scratch(struct local *l, size_t n) {
  if (n > l->cap) {
    l->cap = n;
    l->shard_of = xrealloc(l->shard_of, n * sizeof(uint32_t));
  }
}

static const struct store_table *table_or_err(struct local *l, uint32_t id,
                                              char *err, size_t errlen) {
  const struct store_table *t = ps_local_table(l->tables, l->ntables, id);
  if (!t)
    snprintf(err, errlen, "unknown table %u (the store has %zu tables)", id,
             l->ntables);
  return t;
}

/* Pulls shard by shard into gathered scratch, then scatters to key order. */
static long local_pull(void *ctx, uint32_t table, uint64_t step, size_t n,
                       const uint64_t *keys, const struct ps_rows *out,
                       char *err, size_t errlen) {
  (void)step;
  struct local *l = ctx;
  const struct store_table *t = table_or_err(l, table, err, errlen);
  if (!t)
    return -1;
  if (out->vals_cap < n * t->dim) {
    snprintf(err, errlen,
             "pull of %zu keys of table %u (dim %u) needs "
             "room for %zu floats, vals_cap is %zu",
             n, table, t->dim, n * t->dim, out->vals_cap);
    return -1;
  }
  if (l->S == 1)
    return ps_local_shard_pull(l->stores[0], t, n, keys, out->plen, out->count,
                               out->clicks, out->vals, err, errlen);
  scratch(l, n);
  size_t *pos = xcalloc(l->S + 1, sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    l->shard_of[i] = keys_shard(keys[i], l->S);
    pos[l->shard_of[i] + 1]++;
  }
  for (uint32_t s = 0; s < l->S; s++)
    pos[s + 1] += pos[s];
  /* Keys grouped by shard, and where each came from. */
  uint64_t *gk = xmalloc((n ? n : 1) * sizeof(uint64_t));
  size_t *from = xmalloc((n ? n : 1) * sizeof(size_t));
  size_t *fill = xmalloc(l->S * sizeof(size_t));
  memcpy(fill, pos, l->S * sizeof(size_t));
  for (size_t i = 0; i < n; i++) {
    size_t at = fill[l->shard_of[i]]++;
    gk[at] = keys[i];
    from[at] = i;
  }
  uint16_t *gp = xmalloc((n ? n : 1) * sizeof(uint16_t));
  uint32_t *gc = xmalloc((n ? n : 1) * 2 * sizeof(uint32_t));
  float *gv = xmalloc((n ? n : 1) * t->dim * sizeof(float));
  size_t *voff = xmalloc((n + 1) * sizeof(size_t));
  long total = 0;
  for (uint32_t s = 0; s < l->S; s++) {
    size_t a = pos[s], m = pos[s + 1] - a;
    long got = ps_local_shard_pull(l->stores[s], t, m, gk + a, gp + a, gc + a,
                                   gc + n + a, gv + total, err, errlen);
    if (got < 0) {
      total = -1;
      break;
    }
    total += got;
  }
  if (total >= 0) {
    /* Offsets of each key's values in the caller's order. */
    size_t *p_of = xmalloc((n ? n : 1) * sizeof(size_t));
    for (size_t g = 0; g < n; g++)
      p_of[from[g]] = g;
    voff[0] = 0;
    for (size_t i = 0; i < n; i++)
      voff[i + 1] = voff[i] + gp[p_of[i]];
    size_t goff = 0;
    for (size_t g = 0; g < n; g++) {
      size_t i = from[g];
      out->plen[i] = gp[g];
      out->count[i] = gc[g];
      out->clicks[i] = gc[n + g];
      memcpy(out->vals + voff[i], gv + goff, gp[g] * sizeof(float));
      goff += gp[g];
    }
    free(p_of);
  }
  free(pos);
  free(gk);
  free(from);
  free(fill);
  free(gp);
  free(gc);
  free(gv);
  free(voff);
  return total;
}

/* In process, a pull started is a pull done: that it reads the rows as
 * of its start (ps.h's ordering) then holds trivially. */
static int local_pull_start(void *ctx, uint32_t table, uint64_t step, size_t n,
                            const uint64_t *keys, const struct ps_rows *out,
                            char *err, size_t errlen) {
  struct local *l = ctx;
  int h = 0;
  while (h < PS_MAX_STARTED && l->started[h])
    h++;
  CHECK(h < PS_MAX_STARTED, "more than %d pulls started", PS_MAX_STARTED);
  long rc = local_pull(ctx, table, step, n, keys, out, err, errlen);
  if (rc < 0)
    return -1;
  l->started[h] = true;
  l->started_rc[h] = rc;
  return h;
}

static long local_pull_finish(void *ctx, int h, char *err, size_t errlen) {
  (void)err, (void)errlen;
  struct local *l = ctx;
  CHECK(h >= 0 && h < PS_MAX_STARTED && l->started[h],
        "pull handle %d is not started", h);
  l->started[h] = false;
  return l->started_rc[h];
}

static void local_pull_abandon(void *ctx, int h) {
  struct local *l = ctx;
  CHECK(h >= 0 && h < PS_MAX_STARTED && l->started[h],
        "pull handle %d is not started", h);
  l->started[h] = false;
}

static int local_push(void *ctx, const struct ps_grads *g, char *err,
                      size_t errlen) {
  struct local *l = ctx;
  const struct store_table *t = table_or_err(l, g->table, err, errlen);
  if (!t)
    return -1;
  if (l->S == 1)
    return ps_local_shard_push(l->stores[0], t, g->n, g->keys, g->glen,
                               g->grads, g->plen, g->count, g->clicks, g->step,
                               err, errlen);
  size_t n = g->n, m0 = n ? n : 1;
  for (size_t i = 0; i < n; i++)
    if (g->glen[i] > t->dim) {
      snprintf(err, errlen,
               "table %u key 0x%016llx: gradient of %u floats exceeds dim %u",
               t->id, (unsigned long long)g->keys[i], g->glen[i], t->dim);
      return -1;
    }
  size_t *goff = xmalloc((n + 1) * sizeof(size_t));
  goff[0] = 0;
  for (size_t i = 0; i < n; i++)
    goff[i + 1] = goff[i] + g->glen[i];
  uint64_t *k = xmalloc(m0 * sizeof(uint64_t));
  uint16_t *gl = xmalloc(m0 * sizeof(uint16_t)), *pl = xmalloc(m0 * 2);
  uint32_t *c = xmalloc(m0 * sizeof(uint32_t)), *ck = xmalloc(m0 * 4);
  float *gr = xmalloc((goff[n] ? goff[n] : 1) * sizeof(float));
  int rc = 0;
  for (uint32_t s = 0; s < l->S && rc == 0; s++) {
    size_t m = 0, f = 0;
    for (size_t i = 0; i < n; i++) {
      if (keys_shard(g->keys[i], l->S) != s)
        continue;
      k[m] = g->keys[i];
      gl[m] = g->glen[i];
      pl[m] = g->plen ? g->plen[i] : 0;
      c[m] = g->count ? g->count[i] : 1;
      ck[m] = g->clicks ? g->clicks[i] : 0;
      if (g->glen[i]) {
        memcpy(gr + f, g->grads + goff[i], g->glen[i] * sizeof(float));
        f += g->glen[i];
      }
      m++;
    }
    rc = ps_local_shard_push(l->stores[s], t, m, k, gl, gr, pl, c, ck, g->step,
                             err, errlen);
  }
  free(goff);
  free(k);
  free(gl);
  free(pl);
  free(c);
  free(ck);
  free(gr);
  return rc;
}

enum dense_op { DENSE_PULL, DENSE_PUSH, DENSE_SET };

/* Runs a dense op over the blocks that [off, off + len) touches. */
static int local_dense(struct local *l, enum dense_op op, size_t off,
                       size_t len, float *out, const float *in, char *err,
                       size_t errlen) {
  if (len > l->dense_total || off > l->dense_total - len) {
    snprintf(err, errlen,
             "dense range [%zu, %zu) outside the dense vector of %llu floats",
             off, off + len, (unsigned long long)l->dense_total);
    return -1;
  }
  for (uint32_t s = 0; s < l->S && len > 0; s++) {
    uint64_t bo, bl;
    ps_dense_block(l->dense_total, l->S, s, &bo, &bl);
    uint64_t lo = off > bo ? off : bo,
             hi = off + len < bo + bl ? off + len : bo + bl;
    if (lo >= hi)
      continue;
    int rc;
    if (op == DENSE_PULL)
      rc = store_dense_pull(l->stores[s], lo - bo, hi - lo, out + (lo - off),
                            err, errlen);
    else if (op == DENSE_PUSH)
      rc = store_dense_push(l->stores[s], lo - bo, hi - lo, in + (lo - off),
                            err, errlen);
    else
      rc = store_dense_set(l->stores[s], lo - bo, hi - lo, in + (lo - off), err,
                           errlen);
    if (rc < 0)
      return -1;
  }
  return 0;
}

static int local_pull_dense(void *ctx, uint64_t step, size_t off, size_t len,
                            float *out, char *err, size_t errlen) {
  (void)step;
  return local_dense(ctx, DENSE_PULL, off, len, out, NULL, err, errlen);
}

static int local_push_dense(void *ctx, uint64_t step, size_t off, size_t len,
                            const float *grads, char *err, size_t errlen) {
  (void)step;
  return local_dense(ctx, DENSE_PUSH, off, len, NULL, grads, err, errlen);
}

static int local_set_dense(void *ctx, size_t off, size_t len,
                           const float *values, char *err, size_t errlen) {
  return local_dense(ctx, DENSE_SET, off, len, NULL, values, err, errlen);
}

static int local_set_lr_scale(void *ctx, float scale, char *err,
                              size_t errlen) {
  struct local *l = ctx;
  for (uint32_t s = 0; s < l->S; s++)
    if (store_set_lr_scale(l->stores[s], scale, err, errlen) < 0)
      return -1;
  return 0;
}

/* One worker in one process: nobody to wait for. */
static int local_barrier(void *ctx, uint64_t step, char *err, size_t errlen) {
  (void)ctx, (void)step, (void)err, (void)errlen;
  return 0;
}

static int local_checkpoint(void *ctx, uint64_t step, const char *dir,
                            char *err, size_t errlen) {
  (void)step;
  struct local *l = ctx;
  for (uint32_t s = 0; s < l->S; s++)
    if (ps_local_shard_checkpoint(l->stores[s], s, dir, err, errlen) < 0)
      return -1;
  return 0;
}

static void local_free(void *ctx) {
  struct local *l = ctx;
  if (!l)
    return;
  free(l->stores);
  free(l->tables);
  free(l->shard_of);
  free(l);
}

static const struct ps_ops local_ops = {
    .name = "local",
    .pull = local_pull,
    .push = local_push,
    .pull_start = local_pull_start,
    .pull_finish = local_pull_finish,
    .pull_abandon = local_pull_abandon,
    .pull_dense = local_pull_dense,
    .push_dense = local_push_dense,
    .set_dense = local_set_dense,
    .set_lr_scale = local_set_lr_scale,
    .barrier = local_barrier,
    .checkpoint = local_checkpoint,
    .free = local_free,
};

struct ps *ps_local_new(struct store *const *stores, uint32_t nshards,
                        const struct store_table *tables, size_t ntables,
                        uint64_t dense_total, char *err, size_t errlen) {
  if (nshards == 0 || ntables == 0) {
    snprintf(err, errlen,
             "ps_local: needs at least one store and one table "
             "(got %u stores, %zu tables)",
             nshards, ntables);
    return NULL;
  }
  struct local *l = xcalloc(1, sizeof(*l));
  l->stores = xmalloc(nshards * sizeof(*l->stores));
  for (uint32_t i = 0; i < nshards; i++) {
    CHECK(stores[i], "store %u is NULL", i);
    l->stores[i] = stores[i];
  }
  l->S = nshards;
  l->tables = xmalloc(ntables * sizeof(*tables));
  memcpy(l->tables, tables, ntables * sizeof(*tables));
  l->ntables = ntables;
  l->dense_total = dense_total;
  struct ps *ps = xcalloc(1, sizeof(*ps));
  ps->ops = &local_ops;
  ps->ctx = l;
  ps->nshards = nshards;
  ps->dense_total = dense_total;
  return ps;
}
